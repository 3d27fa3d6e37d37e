"""The cached stage-3 step (prefix_cache.py with from_layer = Method.trained_from): once a row's
prefix K/V, its residual entering the first trained layer and the intervention's prepared write are
kept, a batch runs only the layers from there, with the loss and the gradients of the full
teacher-forced forward over prompt and answer (no split, no cache), for other batch compositions
and paddings than when stored."""
import math

import pytest
import torch
from test_prefix_cache import _loss_and_grads, ex, llama  # noqa: F401  (the tiny model, rows of other paddings)

from neurosymbolic_llm.pipeline import methods
from neurosymbolic_llm.pipeline.configs import InterventionOptions
from neurosymbolic_llm.pipeline.prefix_cache import PrefixCache
from neurosymbolic_llm.symbolic.engine import SymbolicEngine

VSA, ENC, DEC = 64, 1, 3  # the tiny model has 4 blocks


def _method(llama, kind: str, **opts):
    g = torch.Generator().manual_seed(1)
    enc, dec = torch.randn(VSA, 64, generator=g) / 8, {DEC: torch.randn(64, VSA, generator=g) / 8}
    iv_opts = InterventionOptions(symbolic_encoding_layer=ENC, symbolic_decoding_layers=[DEC],
                                  problem_score_threshold=-math.inf, **opts)
    if kind == "adapter":
        return methods.adapter(llama.model, enc, dec, iv_opts, lr=1e-3, init="stage2", seed=0)
    return methods.neurosymbolic(llama.model, SymbolicEngine(VSA_dim=VSA, max_digits=4, seed=4), enc, dec, iv_opts,
                                 lr=1e-3, complexity=2, limit_solution_digits=True)


CASES = {
    "last prompt position": ("neurosymbolic", {}),
    "every answer position": ("neurosymbolic", dict(multi_token_intervention=True)),
    "re-encoded at every position": ("neurosymbolic", dict(multi_token_intervention=True, static_encoding=False)),
    "with the digit counter": ("neurosymbolic", dict(multi_token_intervention=True, encode_counter=True)),
    "true operands": ("neurosymbolic", dict(multi_token_intervention=True, simulate_perfect_encoder=True)),
    "trained skip": ("neurosymbolic", dict(trainable_skip=True)),
    "add_rmsnorm merge": ("neurosymbolic", dict(merge="add_rmsnorm")),
    "adapter (its encoder trains)": ("adapter", dict(multi_token_intervention=True)),
}


@pytest.mark.parametrize("case", CASES)
def test_a_cached_step_gives_the_loss_and_gradients_of_the_full_forward(llama, ex, case):
    kind, opts = CASES[case]
    assert len({len(a) for a in ex.answers}) > 1  # answers of other lengths: padded suffixes
    method = _method(llama, kind, **opts)
    assert method.trained_from == (ENC if kind == "adapter" else DEC)
    cache = PrefixCache(method.trained_from)
    _loss_and_grads(llama, method, ex, [0, 1, 2], cache)  # first epoch: computed and stored
    _loss_and_grads(llama, method, ex, [3, 4, 5], cache)
    assert cache.has(range(6))
    for i, row in cache.rows.items():  # only the layers from the first trained one are kept
        assert len(row) == llama.args.n_layers - method.trained_from
        assert cache.suffix[i][0].shape == (len(ex.answers[i]) + 1, llama.args.dim)

    idx = [5, 0, 3, 1]  # another composition: other paddings than when stored
    ce_ref, g_ref = _loss_and_grads(llama, method, ex, idx, split=False)
    ran = []  # which blocks the cached step runs
    hooks = [block.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
             for i, block in enumerate(llama.model.layers)]
    try:
        ce, g = _loss_and_grads(llama, method, ex, idx, cache)
    finally:
        for h in hooks:
            h.remove()
    assert sorted(set(ran)) == list(range(method.trained_from, llama.args.n_layers))
    torch.testing.assert_close(ce, ce_ref, rtol=1e-5, atol=1e-6)
    assert len(g) == len(g_ref) and any(bool(x.abs().sum() > 0) for x in g)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
