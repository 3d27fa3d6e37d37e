"""Stage-3 training options that change how a step is computed, not what it computes: the same
effective batch split into micro-batches (gradient accumulation), and the prefix split on or off,
train to the same parameters."""
import math

import pytest
import torch

from neurosymbolic_llm.pipeline.configs import FineTuneOptions
from neurosymbolic_llm.pipeline.training import build_examples, train
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.problems import generate_problems

VSA, LAYER = 64, 2


@pytest.fixture(scope="module")
def llama(tiny_ckpt):
    from neurosymbolic_llm.pipeline.configs import FineTuneConfig
    from neurosymbolic_llm.pipeline.runtime import build_llama

    return build_llama(FineTuneConfig(chpt_dir=str(tiny_ckpt), max_seq_len=512), max_batch_size=8, device="cpu")


def _trained(llama, **opts):
    """Decoder weight after two optimizer steps of 8 samples, from a fixed start."""
    from neurosymbolic_llm.pipeline import methods
    from neurosymbolic_llm.pipeline.configs import InterventionOptions

    engine = SymbolicEngine(VSA_dim=VSA, max_digits=4, seed=4)
    g = torch.Generator().manual_seed(1)
    enc, dec = torch.randn(VSA, 64, generator=g) / 8, {LAYER: torch.randn(64, VSA, generator=g) / 8}
    method = methods.neurosymbolic(llama.model, engine, enc, dec, InterventionOptions(
        symbolic_encoding_layer=LAYER, symbolic_decoding_layers=[LAYER], problem_score_threshold=-math.inf),
        lr=1e-2, complexity=2, limit_solution_digits=True)
    rows = generate_problems(16, ["gcd", "lcm", "multiplication", "bitwise_or"], complexity=2, seed=3)
    ex = build_examples(rows, llama.formatter, "train", seed=0, complexity=2, limit_solution_digits=True,
                        problem_list=engine.possible_problems)
    log = train(llama, method, ex, FineTuneOptions(lr_decay={}, **opts), from_csv=True, seed=0)
    return [r["loss"] for r in log], method.intervention.decoders[str(LAYER)].weight.detach().clone(), dec[LAYER]


@pytest.mark.slow
def test_micro_batches_and_prefix_split_train_the_same(llama):
    loss, w, w0 = _trained(llama, n_samples=8, inference_to_backprop_ratio=1)
    assert len(loss) == 2 and not torch.allclose(w, w0)  # two steps that moved the decoder
    for opts in (dict(n_samples=4, inference_to_backprop_ratio=2), dict(n_samples=2, inference_to_backprop_ratio=4),
                 dict(n_samples=8, inference_to_backprop_ratio=1, prefix_split=False),
                 dict(n_samples=4, inference_to_backprop_ratio=2, prefix_split=False)):
        other_loss, other_w, _ = _trained(llama, **opts)
        assert other_loss == pytest.approx(loss, rel=1e-5), opts
        torch.testing.assert_close(other_w, w, rtol=1e-4, atol=1e-6)


def test_prefix_split_option_reaches_the_forward(llama, monkeypatch):
    from neurosymbolic_llm.pipeline import training

    seen = []
    real = training.answer_cross_entropy

    def spy(*a, **kw):
        seen.append(kw["prefix_frozen"])
        return real(*a, **kw)

    monkeypatch.setattr(training, "answer_cross_entropy", spy)
    _trained(llama, n_samples=8, prefix_split=False)
    _trained(llama, n_samples=8)
    assert seen == [False, False, True, True]  # two steps each; the neurosymbolic method allows the split
