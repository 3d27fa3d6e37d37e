"""Prompt prefixes kept across epochs (training --cache_prompt_prefixes, prefix_cache.py): a batch
whose prefixes come from the cache, stored from batches of another composition and padding, gives
the loss and the gradients of the same batch computed from scratch."""
import math

import pytest
import torch

from neurosymbolic_llm.pipeline.prefix_cache import PrefixCache
from neurosymbolic_llm.pipeline.training import answer_cross_entropy, build_examples
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.problems import generate_problems

VSA, LAYER = 64, 2


@pytest.fixture(scope="module")
def llama(tiny_ckpt):
    from neurosymbolic_llm.pipeline.configs import FineTuneConfig
    from neurosymbolic_llm.pipeline.runtime import build_llama

    return build_llama(FineTuneConfig(chpt_dir=str(tiny_ckpt), max_seq_len=512), max_batch_size=8, device="cpu")


@pytest.fixture(scope="module")
def ex(llama):
    rows = generate_problems(6, ["gcd", "lcm", "multiplication", "bitwise_or"], complexity=2, seed=5)
    out = build_examples(rows, llama.formatter, "train", seed=0, complexity=2, limit_solution_digits=True,
                         problem_list=SymbolicEngine(VSA_dim=VSA, max_digits=4, seed=4).possible_problems)
    assert len({len(p) for p in out.prompts}) > 1  # different paddings in different batches
    return out


# (encoding read, method): one layer, or layers 1 and 2 read at once (the cache must start at layer 1)
METHODS = [(LAYER, "neurosymbolic"), ("1+2", "neurosymbolic"), ("1+2", "adapter")]


def _method(llama, read=LAYER, kind="neurosymbolic"):
    from neurosymbolic_llm.pipeline import methods
    from neurosymbolic_llm.pipeline.configs import InterventionOptions

    g = torch.Generator().manual_seed(1)
    opts = InterventionOptions(symbolic_encoding_layer=read, symbolic_decoding_layers=[LAYER],
                               problem_score_threshold=-math.inf, multi_token_intervention=True)
    enc = torch.randn(VSA, 64 * len(opts.read_layers()), generator=g) / 8
    dec = {LAYER: torch.randn(64, VSA, generator=g) / 8}
    if kind == "adapter":
        return methods.adapter(llama.model, enc, dec, opts, lr=1e-3, init="stage2", seed=0)
    return methods.neurosymbolic(llama.model, SymbolicEngine(VSA_dim=VSA, max_digits=4, seed=4), enc, dec, opts,
                                 lr=1e-3, complexity=2, limit_solution_digits=True)


def _loss_and_grads(llama, method, ex, idx, cache=None, split=True):
    """(loss [B], gradients) of rows idx; split: the prefix without gradients (prefix_frozen)."""
    eot = llama.tokenizer.eot_id
    for p in method.params:
        p.grad = None
    with method.attach():
        ce = answer_cross_entropy(llama.model, [ex.prompts[i] for i in idx], [ex.answers[i] + [eot] for i in idx],
                                  fill_id=eot, intervention=method.intervention, truth=ex.truth(idx),
                                  prefix_frozen=split, prefix_cache=cache, keys=idx)
    ce.sum().backward()
    return ce.detach(), [p.grad.clone() for p in method.params]


@pytest.mark.parametrize("read,kind", METHODS)
def test_cached_prefixes_give_the_loss_and_gradients_of_a_fresh_forward(llama, ex, read, kind):
    method = _method(llama, read, kind)
    cache = PrefixCache(method.trained_from)
    _loss_and_grads(llama, method, ex, [0, 1, 2], cache)  # first epoch: computed and stored
    _loss_and_grads(llama, method, ex, [3, 4, 5], cache)
    assert len(cache) == 6 and cache.nbytes() > 0
    for i, row in cache.rows.items():  # one (keys, values) pair per layer, prompt length - 1 positions
        assert len(row) == llama.args.n_layers - cache.from_layer and row[0][0].shape[1] == len(ex.prompts[i]) - 1

    idx = [5, 0, 3, 1]  # another composition: other left paddings than when stored
    assert cache.has(idx)
    ce_ref, g_ref = _loss_and_grads(llama, method, ex, idx)
    rows_before = {i: [k.clone() for k, _ in cache.rows[i]] for i in idx}
    ce, g = _loss_and_grads(llama, method, ex, idx, cache)
    torch.testing.assert_close(ce, ce_ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for i in idx:  # loading leaves the stored entries as they were
        assert all(torch.equal(a, k) for a, (k, _) in zip(rows_before[i], cache.rows[i]))


def test_a_batch_with_an_uncached_row_is_computed_and_stored(llama, ex):
    method = _method(llama)
    cache = PrefixCache()
    _loss_and_grads(llama, method, ex, [0, 1], cache)
    assert not cache.has([0, 2])
    ce_ref, _ = _loss_and_grads(llama, method, ex, [0, 2])
    ce, _ = _loss_and_grads(llama, method, ex, [0, 2], cache)
    torch.testing.assert_close(ce, ce_ref, rtol=1e-5, atol=1e-6)
    assert cache.has([0, 1, 2])
