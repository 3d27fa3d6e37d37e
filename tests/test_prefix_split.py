"""Causal prefix reuse in training (answer_cross_entropy's prefix_frozen): running the prompt up to
P-2 under no_grad into a KV cache and the rest with gradients gives the loss, the gradients of the
trained parameters and the per-sample records of the one unsplit forward."""
import math

import pytest
import torch

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
def engine():
    return SymbolicEngine(VSA_dim=VSA, max_digits=4, seed=4)


@pytest.fixture(scope="module")
def ex(llama, engine):
    # lcm and multiplication give 3-4 digit answers: a mix of one- and two-token answers (ragged batch)
    rows = generate_problems(8, ["gcd", "lcm", "multiplication", "bitwise_or"], complexity=2, seed=3)
    out = build_examples(rows, llama.formatter, "train", seed=0, complexity=2, limit_solution_digits=True,
                         problem_list=engine.possible_problems)
    assert len({len(a) for a in out.answers}) > 1 and len({len(p) for p in out.prompts}) > 1
    return out


def _method(kind, llama, engine, **kw):
    from neurosymbolic_llm.pipeline import methods
    from neurosymbolic_llm.pipeline.configs import InterventionOptions

    g = torch.Generator().manual_seed(1)
    enc, dec = torch.randn(VSA, 64, generator=g) / 8, {LAYER: torch.randn(64, VSA, generator=g) / 8}
    opts = InterventionOptions(symbolic_encoding_layer=LAYER, symbolic_decoding_layers=[LAYER], **kw)
    if kind == "adapter":
        return methods.adapter(llama.model, enc, dec, opts, lr=1e-3, init="stage2", seed=0)
    return methods.neurosymbolic(llama.model, engine, enc, dec, opts, lr=1e-3, complexity=2,
                                   limit_solution_digits=True)


def _loss_and_grads(llama, method, ex, prefix_frozen):
    eot = llama.tokenizer.eot_id
    for p in method.params:
        p.grad = None
    with method.attach():
        ce = answer_cross_entropy(llama.model, ex.prompts, [a + [eot] for a in ex.answers], fill_id=eot,
                                  intervention=method.intervention, truth=ex.truth(range(len(ex))),
                                  prefix_frozen=prefix_frozen)
    ce.sum().backward()
    return ce.detach(), [p.grad.clone() for p in method.params], method.intervention.take_records()


CASES = {
    "neurosymbolic": ("neurosymbolic", dict(problem_score_threshold=-math.inf)),
    "neurosymbolic_multi_token": ("neurosymbolic", dict(problem_score_threshold=-math.inf, multi_token_intervention=True)),
    "neurosymbolic_multi_token_reencoded": ("neurosymbolic", dict(problem_score_threshold=0.0, multi_token_intervention=True,
                                                                  static_encoding=False, trainable_skip=True)),
    "neurosymbolic_add_rmsnorm": ("neurosymbolic", dict(problem_score_threshold=-math.inf, merge="add_rmsnorm",
                                                        multi_token_intervention=True)),
    "adapter": ("adapter", {}),
    "adapter_multi_token": ("adapter", dict(multi_token_intervention=True)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_split_forward_equals_unsplit(llama, engine, ex, case):
    kind, kw = CASES[case]
    method = _method(kind, llama, engine, **kw)
    assert method.prefix_frozen and method.params
    ce_full, g_full, rec_full = _loss_and_grads(llama, method, ex, prefix_frozen=False)
    ce_split, g_split, rec_split = _loss_and_grads(llama, method, ex, prefix_frozen=True)
    torch.testing.assert_close(ce_split, ce_full, rtol=1e-5, atol=1e-5)
    assert len(g_split) == len(g_full)
    for a, b in zip(g_split, g_full):
        assert b.abs().max() > 0  # the gradient is not trivially zero
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert rec_split.keys() == rec_full.keys()
    for k in rec_full:
        torch.testing.assert_close(rec_split[k], rec_full[k], equal_nan=True)
    assert all(p.grad is None for p in llama.model.parameters())
    assert llama.model.layers[0].attention.cache_k is None  # the cache is freed


def test_lora_keeps_the_unsplit_forward(tiny_ckpt):
    from neurosymbolic_llm.pipeline.configs import BaselineOptions, FineTuneConfig
    from neurosymbolic_llm.pipeline.methods import lora, plain
    from neurosymbolic_llm.pipeline.runtime import build_llama

    assert not plain().prefix_frozen
    model = build_llama(FineTuneConfig(chpt_dir=str(tiny_ckpt), max_seq_len=512), max_batch_size=8, device="cpu").model
    assert not lora(model, BaselineOptions(lora_rank=2), seed=0).prefix_frozen


def test_suffix_gradient_flows_through_its_own_keys_and_values(llama):
    """Under the KV cache a chunk run with gradients attends to its own K/V in the graph: a change
    at the chunk's first position reaches later positions' logits through attention."""
    model = llama.model
    tokens = torch.randint(0, 1000, (2, 12))
    delta = torch.zeros(2, 1, 64, requires_grad=True)

    def hook(h, ctx):  # add delta at absolute position 8
        i = 8 - ctx.start_pos
        if 0 <= i < h.shape[1]:
            return torch.cat([h[:, :i], h[:, i:i + 1] + delta, h[:, i + 1:]], 1)
        return None

    handle = model.register_residual_hook(1, hook)
    try:
        full = model(tokens, output_positions=torch.tensor([11]))
        (g_full,) = torch.autograd.grad(full.logsumexp(-1).sum(), delta)
        with model.kv_cache(2, 12):
            with torch.no_grad():
                model(tokens[:, :8], output_positions=torch.zeros(0, dtype=torch.long))
            split = model(tokens[:, 8:], 8, output_positions=torch.tensor([3]))
        (g_split,) = torch.autograd.grad(split.logsumexp(-1).sum(), delta)
    finally:
        handle.remove()
    torch.testing.assert_close(split, full, rtol=1e-5, atol=1e-5)
    assert g_full.abs().max() > 0
    torch.testing.assert_close(g_split, g_full, rtol=1e-4, atol=1e-6)


def test_output_positions_pairs(llama):
    model = llama.model
    tokens = torch.randint(0, 1000, (3, 7))
    with torch.no_grad():
        full = model(tokens)  # [3,7,V]
        rows, pos = torch.tensor([0, 2, 2, 1]), torch.tensor([6, 0, 5, 3])
        torch.testing.assert_close(model(tokens, output_positions=(rows, pos)), full[rows, pos])
        empty = torch.zeros(0, dtype=torch.long)
        assert model(tokens, output_positions=(empty, empty)).shape == (0, model.vocab_size)
