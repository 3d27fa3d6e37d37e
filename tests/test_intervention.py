"""The neurosymbolic intervention as residual hooks: gate, positions, merge modes, gradients."""
import dataclasses
import math


import pytest
import torch

from neurosymbolic_llm.llama.model import ModelArgs, Transformer
from neurosymbolic_llm.pipeline.configs import InterventionOptions
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError
from neurosymbolic_llm.pipeline.intervention import SymbolicIntervention
from neurosymbolic_llm.symbolic.engine import SymbolicEngine

VOCAB, DIM, VSA = 300, 64, 64


@pytest.fixture(scope="module")
def model():
    args = ModelArgs(dim=DIM, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=VOCAB, multiple_of=32)
    m = Transformer(args).init_weights(seed=0).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def engine():
    return SymbolicEngine(VSA_dim=VSA, max_digits=4, seed=4)


def make_iv(engine, threshold=-math.inf, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    kw.setdefault("symbolic_encoding_layer", 2)
    kw.setdefault("symbolic_decoding_layers", [2])
    opts = InterventionOptions(problem_score_threshold=threshold, **kw)
    enc = torch.randn(VSA, DIM, generator=g) / DIM ** 0.5
    dec = {l: torch.randn(DIM, VSA, generator=g) for l in opts.symbolic_decoding_layers}
    return SymbolicIntervention(engine, enc, dec, opts)


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, VOCAB, (4, 9), generator=g), torch.tensor([0, 3, 1, 5])


@torch.no_grad()
def test_closed_gate_is_bit_identical(model, engine):
    tok, pad = batch()
    base = model(tok, pad_lengths=pad)
    for multi in (False, True):
        iv = make_iv(engine, threshold=math.inf, multi_token_intervention=multi, static_encoding=not multi)
        with iv.attached(model), iv.prompt_length(6):
            out = model(tok, pad_lengths=pad)
        assert torch.equal(out, base)
        assert not iv.take_records()["gate"].any()


@torch.no_grad()
@pytest.mark.parametrize("bound", ["threshold", "maximum"])
def test_mixed_batch_changes_only_open_samples(model, engine, bound):
    """A batch cut at its median score, by the threshold (score above opens) or by
    --problem_score_max (score below opens): closed samples keep their state bit for bit, open ones
    change at position P-1 only; the rule is the one the gate statistics use (gate_open)."""
    from neurosymbolic_llm.pipeline.gate import gate_open

    tok, pad = batch()
    base = model(tok, pad_lengths=pad)
    iv = make_iv(engine)
    with iv.attached(model):
        model(tok, pad_lengths=pad)
    scores = iv.take_records()["score"]
    cut = float(scores.median())
    iv.gate = dataclasses.replace(iv.gate, **{"lower" if bound == "threshold" else "upper": cut})
    with iv.attached(model):
        out = model(tok, pad_lengths=pad)
    gate = iv.take_records()["gate"]
    assert torch.equal(gate, scores > cut if bound == "threshold" else scores < cut)
    assert torch.equal(gate, gate_open(scores, iv.gate.lower, iv.gate.upper))
    assert gate.any() and (~gate).any()
    assert torch.equal(out[~gate], base[~gate])
    changed = (out != base).any(-1)  # [B,S]
    assert changed[gate, -1].all() and not changed[:, :-1].any()  # only position P-1 = S-1


def test_gate_maximum_must_exceed_threshold():
    with pytest.raises(ConfigError, match=r"--problem_score_max 0.5 must exceed --problem_score_threshold 0.8"):
        InterventionOptions(problem_score_threshold=0.8, problem_score_max=0.5).validate_intervention()


@torch.no_grad()
def test_default_writes_only_last_prompt_position_in_teacher_forcing(model, engine):
    tok, pad = batch()
    P = 6  # prompt = positions 0..5, answer = 6..8
    base = model(tok, pad_lengths=pad)
    iv = make_iv(engine)
    with iv.attached(model), iv.prompt_length(P):
        out = model(tok, pad_lengths=pad)
    diff = (out != base).any(-1)  # [B,S]
    assert not diff[:, :P - 1].any() and diff[:, P - 1].all()
    # later positions change only through attention to the modified position
    iv_multi = make_iv(engine, multi_token_intervention=True)
    with iv_multi.attached(model), iv_multi.prompt_length(P):
        out_multi = model(tok, pad_lengths=pad)
    assert torch.equal(out_multi[:, :P], out[:, :P]) and not torch.equal(out_multi[:, P:], out[:, P:])


@pytest.mark.parametrize("static", [True, False])
@torch.no_grad()
def test_multi_token_generation_matches_teacher_forcing(model, engine, static):
    """Incremental decoding with the KV cache gives the teacher-forced forward's logits."""
    tok, pad = batch()
    P = 6
    iv = make_iv(engine, multi_token_intervention=True, static_encoding=static)
    with iv.attached(model):
        with iv.prompt_length(P):
            full = model(tok, pad_lengths=pad)  # [B,S,V]
        rec_full = iv.take_records()
        steps = []
        with model.kv_cache(tok.shape[0], tok.shape[1]):
            steps.append(model(tok[:, :P], 0, pad_lengths=pad)[:, -1])
            for pos in range(P, tok.shape[1]):
                steps.append(model(tok[:, pos:pos + 1], pos, pad_lengths=pad)[:, -1])
        rec_gen = iv.take_records()
    inc = torch.stack(steps, 1)  # [B,S-P+1,V]
    torch.testing.assert_close(inc, full[:, P - 1:], rtol=1e-4, atol=1e-4)
    for k in rec_full:
        torch.testing.assert_close(rec_full[k], rec_gen[k], rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_simulated_perfect_encoder_uses_true_operands(model, engine):
    tok, pad = batch()
    outs = []
    for seed in (0, 1):  # different encoders decode different operands, the solver sees the truth
        iv = make_iv(engine, seed=seed, simulate_perfect_encoder=True)
        dec = SymbolicIntervention(engine, iv.encoder.weight, {2: make_iv(engine).decoders["2"].weight}, iv.opts)
        dec.set_truth(torch.tensor([1, 4, 5, 9]), torch.tensor([12, 40, 77, 5]), torch.tensor([3, 9, 2, 1]))
        with dec.attached(model):
            outs.append(model(tok, pad_lengths=pad))
    assert torch.equal(outs[0], outs[1])


def test_gradients_reach_only_trainable_parts(model, engine):
    tok, pad = batch()
    for merge, extra, expect in [("convex", {"trainable_skip": True}, {"decoders.2.weight", "merges.2.skip"}),
                                 ("add", {}, {"decoders.2.weight"}),
                                 ("add_rmsnorm", {}, {"decoders.2.weight", "merges.2.norm.weight"})]:
        iv = make_iv(engine, merge=merge, **extra)
        names = {n for n, p in iv.named_parameters() if p.requires_grad}
        assert names == expect
        with iv.attached(model):
            loss = model(tok, pad_lengths=pad)[:, -1].logsumexp(-1).mean()
        loss.backward()
        for n, p in iv.named_parameters():
            assert (p.grad is not None and p.grad.abs().sum() > 0) == (n in expect), n
        assert all(p.grad is None for p in model.parameters())


def test_rms_layer_alias_and_adapter_mode(model, engine):
    opts = InterventionOptions(symbolic_encoding_layer=2, symbolic_decoding_layers=[2], rms_layer=True)
    assert opts.merge_mode() == "add_rmsnorm"
    g = torch.Generator().manual_seed(0)
    iv = SymbolicIntervention(None, torch.randn(VSA, DIM, generator=g), {2: torch.randn(DIM, VSA, generator=g)},
                              InterventionOptions(symbolic_encoding_layer=2, symbolic_decoding_layers=[2],
                                                  problem_score_threshold=math.inf), mode="adapter")
    tok, pad = batch()
    with iv.attached(model):
        model(tok, pad_lengths=pad)[:, -1].sum().backward()
    assert iv.take_records()["gate"].all()  # no gate: always on
    assert iv.encoder.weight.grad is not None and iv.decoders["2"].weight.grad is not None


def test_layer_errors(engine):
    """Each layer error names the option to change."""
    with pytest.raises(ConfigError, match=r"--symbolic_decoding_layers \[2\] must not precede --symbolic_encoding_layer 3"):
        InterventionOptions(symbolic_encoding_layer=3, symbolic_decoding_layers=[2]).validate_layers(4)
    with pytest.raises(ConfigError, match=r"--symbolic_decoding_layers \[7\]: this model has residual layers 0..4"):
        InterventionOptions(symbolic_encoding_layer=2, symbolic_decoding_layers=[7]).validate_layers(4)
    with pytest.raises(ConfigError, match=r"--symbolic_encoding_layer 17: this model has residual layers 0..4"):
        InterventionOptions(symbolic_encoding_layer=17, symbolic_decoding_layers=[17]).validate_layers(4)
    with pytest.raises(DataError, match="decoding layer"):
        SymbolicIntervention(engine, torch.zeros(VSA, DIM), {1: torch.zeros(DIM, VSA)},
                             InterventionOptions(symbolic_encoding_layer=2, symbolic_decoding_layers=[2]))


@torch.no_grad()
def test_encode_counter_adds_x_to_the_power_t_after_the_prompt(model, engine):
    """With --encode_counter the answer vector written t tokens after P-1 is a + x^t (nothing at t = 0),
    in a teacher-forced forward and step by step in generation alike."""
    tok, pad = batch()
    P = 6
    plain = make_iv(engine, multi_token_intervention=True)
    counted = make_iv(engine, multi_token_intervention=True, encode_counter=True)
    pending = {}
    for name, iv in (("plain", plain), ("counted", counted)):
        with iv.attached(model), iv.prompt_length(P):
            model(tok, pad_lengths=pad)
        lo, hi, a, _ = iv._pending  # written chunk positions P-1 .. S-1
        assert (lo, hi) == (P - 1, tok.shape[1])
        pending[name] = a  # [B,K,V]
    x = engine.roles["x"]
    powers = torch.stack([torch.zeros_like(x)] + [_power(x, t) for t in range(1, hi - lo)])  # [K,V]
    torch.testing.assert_close(pending["counted"] - pending["plain"], powers[None].expand_as(pending["plain"]),
                               rtol=1e-5, atol=1e-5)
    # generation: the single-token step at position P-1+t adds x^t as well
    with counted.attached(model), model.kv_cache(tok.shape[0], tok.shape[1]):
        model(tok[:, :P], 0, pad_lengths=pad)
        for pos in range(P, P + 2):
            model(tok[:, pos:pos + 1], pos, pad_lengths=pad)
            step_a = counted._pending[2][:, 0]  # [B,V]
            torch.testing.assert_close(step_a - pending["plain"][:, 0], _power(x, pos - P + 1)[None].expand_as(step_a),
                                       rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="--encode_counter 1 needs --multi_token_intervention 1"):
        InterventionOptions(encode_counter=True).validate_intervention()


def _power(x, t):
    """x bound with itself t times, by repeated circular convolution (independent of vsa.power's FFT)."""
    out = torch.zeros_like(x)
    out[0] = 1
    for _ in range(t):
        out = torch.stack([(out * torch.roll(x.flip(0), k + 1)).sum() for k in range(len(x))])
    return out
