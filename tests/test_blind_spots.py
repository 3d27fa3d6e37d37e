"""Tests with independent references where deliberate bugs went unseen (issue 30): stage 1's read
position against a forward pass written here from the equations (not the recorder or the model it
tests); `correct` and accuracy against answers known to be right, wrong or unparseable; an artefact
whose every saved setting differs from its default, round-tripped and used (a finite upper gate
bound that closes the gate)."""
import dataclasses
import math

import pandas as pd
import pytest
import torch

from neurosymbolic_llm.llama.checkpoint import save_checkpoint
from neurosymbolic_llm.llama.generation import Llama
from neurosymbolic_llm.llama.model import ModelArgs, Transformer
from neurosymbolic_llm.pipeline.artefact import TrainedIntervention, load_intervention, save_intervention
from neurosymbolic_llm.pipeline.configs import InterventionOptions
from neurosymbolic_llm.pipeline.maps import model_info
from neurosymbolic_llm.symbolic.engine import SymbolicEngine

PARAMS = {"dim": 64, "n_layers": 3, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 128256, "multiple_of": 32,
          "ffn_dim_multiplier": None, "norm_eps": 1e-5, "rope_theta": 10000.0, "use_scaled_rope": False}


def reference_residuals(sd: dict, tokens: list[int]) -> list[torch.Tensor]:
    """The residual stream at the last token entering each block and after the final norm, in
    float64, from the weights alone: RMSNorm, rotary embedding of interleaved pairs, causal
    grouped-query attention, SwiGLU."""
    w = {k: v.double() for k, v in sd.items()}
    D, H, Hkv = PARAMS["dim"], PARAMS["n_heads"], PARAMS["n_kv_heads"]
    hd, S = D // H, len(tokens)

    def norm(x, g):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + PARAMS["norm_eps"]) * g

    def rope(x):  # x [S, heads, hd]
        inv = PARAMS["rope_theta"] ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        ang = torch.arange(S, dtype=torch.float64)[:, None] * inv  # [S, hd/2]
        c, s = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2)

    h = w["tok_embeddings.weight"][torch.tensor(tokens)]  # [S, D]
    out = [h[-1]]
    for i in range(PARAMS["n_layers"]):
        p = f"layers.{i}."
        x = norm(h, w[p + "attention_norm.weight"])
        q = rope((x @ w[p + "attention.wq.weight"].T).view(S, H, hd))
        k = rope((x @ w[p + "attention.wk.weight"].T).view(S, Hkv, hd)).repeat_interleave(H // Hkv, dim=1)
        v = (x @ w[p + "attention.wv.weight"].T).view(S, Hkv, hd).repeat_interleave(H // Hkv, dim=1)
        scores = torch.einsum("shd,thd->hst", q, k) / math.sqrt(hd)
        scores = scores.masked_fill(torch.triu(torch.ones(S, S, dtype=torch.bool), 1), float("-inf"))
        att = torch.einsum("hst,thd->shd", scores.softmax(-1), v).reshape(S, D)
        h = h + att @ w[p + "attention.wo.weight"].T
        x = norm(h, w[p + "ffn_norm.weight"])
        ffn = torch.nn.functional.silu(x @ w[p + "feed_forward.w1.weight"].T) * (x @ w[p + "feed_forward.w3.weight"].T)
        h = h + ffn @ w[p + "feed_forward.w2.weight"].T
        out.append(h[-1])
    out[-1] = norm(h, w["norm.weight"])[-1]  # residual index n_layers: after the final norm
    return out


def test_stage1_reads_the_last_prompt_token_of_each_layer(tmp_path):
    from neurosymbolic_llm.stages.gather import LastTokenRecorder, record_hidden

    model = Transformer(ModelArgs.from_params(PARAMS)).init_weights(seed=3)
    save_checkpoint(model, PARAMS, tmp_path / "m")
    llama = Llama.build(tmp_path / "m", max_seq_len=64, max_batch_size=4, device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 5000, (n,), generator=g).tolist() for n in (9, 4, 13)]  # left-padded together
    layers = [0, 1, 2, 3]
    got = record_hidden(llama.model, LastTokenRecorder(llama.model, layers), prompts, 3, llama.tokenizer.pad_id,
                        torch.device("cpu"), torch.float32)  # [n, L, D]
    sd = torch.load(tmp_path / "m" / "consolidated.00.pth", weights_only=True)
    for i, tokens in enumerate(prompts):
        want = reference_residuals(sd, tokens)
        for j, layer in enumerate(layers):
            torch.testing.assert_close(got[i, j].double(), want[layer], rtol=1e-4, atol=1e-4,
                                       msg=f"prompt {i}, layer {layer}")


def test_correct_and_accuracy_follow_parsed_equals_expected():
    """Answers scripted per row: right, wrong, unparseable; `correct` and results.csv's accuracy
    must count only the right ones (an unparseable answer is never correct)."""
    from neurosymbolic_llm.pipeline.evaluation import evaluate, summarize
    from neurosymbolic_llm.pipeline.training import Examples, Method

    rows = pd.DataFrame({"problem_type": ["gcd", "gcd", "gcd", "modulo", "modulo", "modulo"],
                         "x": [12, 9, 8, 17, 20, 7], "y": [8, 6, 4, 5, 7, 3],
                         "question": [f"q{i}" for i in range(6)], "solution": [4, 3, 4, 2, 6, 1]})
    replies = ["4", "5", "I cannot say", "2", "", "the answer is one"]
    right = [True, False, False, True, False, False]
    served = iter(replies)
    method = Method("scripted", respond=lambda prompts, n: [next(served) for _ in prompts])

    class Tok:
        eot_id = 0

    class FakeLlama:
        tokenizer, model = Tok(), None

    ex = Examples(rows=rows, prompts=[[1, 2]] * 6, answers=[[3]] * 6, type_ids=torch.tensor([0, 0, 0, 1, 1, 1]))
    df = evaluate(FakeLlama(), method, ex, max_new_tokens=4, batch_size=4, seen_types=["gcd"],
                  problem_list=["gcd", "modulo"])
    assert df["parsed"].isna().sum() >= 2  # unparseable answers are present
    assert list(df["correct"]) == right
    acc = summarize(df).set_index("problem_type")["accuracy"]
    assert acc["gcd"] == pytest.approx(1 / 3) and acc["modulo"] == pytest.approx(1 / 3)


NON_DEFAULT = dict(symbolic_encoding_layer=1, symbolic_decoding_layers=[2, 3], problem_score_threshold=-7.5,
                   problem_score_max=11.25, merge="add_rmsnorm", rms_layer=False, starting_skip_strength=0.3,
                   trainable_skip=True, static_encoding=False, multi_token_intervention=True,
                   simulate_perfect_encoder=True, encode_counter=True, gate_min_type_margin=0.25,
                   gate_min_digit_margin=0.125)


def test_every_saved_setting_round_trips_and_is_used(tmp_path):
    defaults = InterventionOptions()
    differs = {f.name for f in dataclasses.fields(InterventionOptions) if NON_DEFAULT[f.name] != getattr(defaults, f.name)}
    assert differs == set(NON_DEFAULT) - {"rms_layer"}  # rms_layer is an alias of merge add_rmsnorm
    g = torch.Generator().manual_seed(1)
    engine = SymbolicEngine(VSA_dim=32, max_digits=3, seed=13)
    art = TrainedIntervention(engine, torch.randn(32, 16, generator=g), {2: torch.randn(16, 32, generator=g),
                              3: torch.randn(16, 32, generator=g)},
                              {"2": {"skip": torch.tensor(0.7), "norm.weight": torch.randn(16, generator=g)}},
                              InterventionOptions(**NON_DEFAULT), {"complexity": 1, "limit_solution_digits": False,
                                                                   "seed": 77}, model_info("fp", 16, 4), "", {})
    back = load_intervention(save_intervention(tmp_path / "iv", art))
    assert dataclasses.asdict(back.options) == NON_DEFAULT
    assert back.prompt == {"complexity": 1, "limit_solution_digits": False, "seed": 77}
    assert back.engine.seed == 13 and back.engine.max_digits == 3
    assert all(torch.equal(back.merge_state["2"][k], v) for k, v in art.merge_state["2"].items())


def test_a_finite_upper_gate_bound_changes_the_decision(tiny_ckpt, tmp_path):
    """The saved upper bound is what the loaded intervention uses: below the question's score it
    closes a gate that the one-sided gate opens."""
    from neurosymbolic_llm.stages.ask import ask

    llama = Llama.build(tiny_ckpt, max_seq_len=512, max_batch_size=1, device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    engine = SymbolicEngine(VSA_dim=64, max_digits=4, seed=4)
    q = ["What is 12 times 7 mod 1000?"]

    def answer(threshold, maximum):
        opts = InterventionOptions(symbolic_encoding_layer=2, symbolic_decoding_layers=[2],
                                   problem_score_threshold=threshold, problem_score_max=maximum, merge="add")
        art = TrainedIntervention(engine, torch.randn(64, 64, generator=g.manual_seed(0)) / 8,
                                  {2: torch.randn(64, 64, generator=g) / 8}, {}, opts,
                                  {"complexity": 2, "limit_solution_digits": True, "seed": 5},
                                  model_info(llama.fingerprint, 64, 4), "", {})
        folder = save_intervention(tmp_path / f"iv{maximum}", art)
        return next(ask(llama, load_intervention(folder), q, max_new_tokens=2))["gate"]

    score = answer(-100.0, math.inf)["score"]
    assert answer(score - 1.0, math.inf)["open"]
    closed = answer(score - 1.0, score - 0.5)
    assert closed["maximum"] == score - 0.5 and not closed["open"]
