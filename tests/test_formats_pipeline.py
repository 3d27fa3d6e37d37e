"""Stages 1-3 end to end on a tiny model in each checkpoint format, and answers of several tokens.

meta: the tiny Llama 3 checkpoint (Llama 3 tokenizer: up to three digits per token); hf: the tied
SmolLM2-style model (one token per digit, ChatML) as a Hugging Face folder; gguf: the GQA Llama 3-style
model as GGUF Q8_0. The weights are random: these tests check that every stage runs, records the
model's identity and handles answers of several tokens, not the accuracy.
"""
import pandas as pd
import pytest
import torch

from neurosymbolic_llm.llama.formats import open_checkpoint
from neurosymbolic_llm.pipeline.configs import FineTuneConfig, TrainEncodersConfig
from neurosymbolic_llm.cli.train_encoders_and_decoders import run as run_stage12
from neurosymbolic_llm.pipeline.evaluation import answer_token_budget
from neurosymbolic_llm.stages.fine_tune import run as run_stage3
from neurosymbolic_llm.pipeline.hidden_store import HiddenStore
from neurosymbolic_llm.pipeline.maps import load_maps
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.pipeline.runtime import build_llama

pytestmark = pytest.mark.slow
TYPES = ["gcd", "modulo", "addition"]


def checkpoint(fmt, tiny_ckpt, tiny_formats):
    return {"meta": tiny_ckpt, "hf": tiny_formats["tied"]["hf"], "gguf": tiny_formats["gqa"]["Q8_0"]}[fmt]


@pytest.mark.parametrize("fmt", ["meta", "hf", "gguf"])
def test_stages_1_to_3(fmt, tiny_ckpt, tiny_formats, tmp_path):
    ckpt = checkpoint(fmt, tiny_ckpt, tiny_formats)
    n_layers = open_checkpoint(ckpt).args().n_layers
    layer = n_layers // 2
    common = ["--chpt_dir", str(ckpt), "--programs_dir", str(tmp_path), "--run_name", "r", "--device", "cpu",
              "--VSA_dim", "128", "--max_digits", "4", "--max_seq_len", "512",
              "--problem_type", "gcd,modulo", "--testing_problems", ",".join(TYPES)]
    stage12 = common + ["--train_data_rounds", "24", "--val_data_rounds", "8", "--testing_data_rounds", "9",
                        "--layer_numbers", f"[{layer}]", "--training_epochs", "3", "--decoding_epochs", "3"]
    assert run_stage12(parse_config(TrainEncodersConfig, stage12 + ["--generate_data", "1"])) == 0
    manifest = HiddenStore(tmp_path / "gathered_data_r").read_manifest()
    assert manifest["complete"] and manifest["model"]["format"] == fmt
    assert manifest["model_fingerprint"] == open_checkpoint(ckpt).fingerprint()
    assert run_stage12(parse_config(TrainEncodersConfig, stage12 + ["--generate_data", "0"])) == 0
    enc, dec = tmp_path / "models" / "encoders_r.pth", tmp_path / "models" / "decoders_r.pth"
    stage3 = common + ["--run_name", "r3", "--encoder_path", str(enc), "--decoder_path", str(dec),
                       "--symbolic_encoding_layer", str(layer), "--symbolic_decoding_layers", str(layer),
                       "--problem_score_threshold", "-100", "--multi_token_intervention", "1",
                       "--test_baseline", "1", "--num_steps", "2", "--n_samples", "4", "--validation_rows", "4",
                       "--testing_num_steps", "1", "--testing_n_samples", "2", "--eval_batch_size", "4"]
    assert run_stage3(parse_config(FineTuneConfig, stage3)) == 0
    res = pd.read_csv(tmp_path / "results" / "r3" / "results.csv")
    assert sorted(zip(res["method"], res["problem_type"])) == sorted(
        (m, t) for m in ("neurosymbolic", "baseline") for t in TYPES)
    assert res["cross_entropy"].notna().all() and (res["cross_entropy"] > 0).all()
    resp = pd.read_csv(tmp_path / "results" / "r3" / "responses.csv")
    assert resp[resp["method"] == "neurosymbolic"]["gate_open"].all()
    tuned = load_maps(tmp_path / "models" / "decoders_r_post_fine_tuning_r3.pth", "decoder")
    assert not torch.equal(tuned.weights[layer], load_maps(dec, "decoder").weights[layer])


def test_answers_of_one_token_per_digit(tiny_formats):
    """With SmolLM2-style digits every digit is a token: answer spans, the stop token and the budget."""
    from neurosymbolic_llm.pipeline.training import build_examples, teacher_batch
    from neurosymbolic_llm.symbolic.problems import generate_problems
    from neurosymbolic_llm.symbolic.solver import PROBLEM_TYPES

    llama = build_llama(FineTuneConfig(chpt_dir=str(tiny_formats["tied"]["hf"]), max_seq_len=512),
                        max_batch_size=8, device="cpu")
    tok = llama.tokenizer
    rows = generate_problems(12, ["addition", "gcd"], complexity=2, seed=1)
    ex = build_examples(rows, llama.formatter, "test", seed=0, complexity=2, limit_solution_digits=True,
                        problem_list=list(PROBLEM_TYPES))
    for answer, solution in zip(ex.answers, rows["solution"]):
        assert [tok.decode([t]) for t in answer] == list(str(solution))  # one token per digit
    assert tok.eot_id == tok.special_tokens["<|im_end|>"] and tok.eot_id in tok.stop_tokens
    assert all(p[-2:] == tok.encode("assistant\n", bos=False, eos=False)[-2:] for p in ex.prompts)
    tokens, pad, P, targets, out_pos = teacher_batch(ex.prompts, [a + [tok.eot_id] for a in ex.answers], tok.eot_id)
    for b, a in enumerate(ex.answers):  # the target span is the digits then the end of the turn
        assert targets[b, :len(a) + 1].tolist() == a + [tok.eot_id]
        assert tokens[b, P:P + len(a)].tolist() == a
    # 4-digit answers (complexity 2) fit the paper's 8 tokens; 8-digit unreduced products need 10
    assert answer_token_budget(tok, 2, True) == 8
    assert answer_token_budget(tok, 3, False) == 8 + 2
    llama3 = build_llama(FineTuneConfig(chpt_dir=str(tiny_formats["gqa"]["hf"]), max_seq_len=512),
                         max_batch_size=8, device="cpu")
    assert len(llama3.tokenizer.encode("12345678", bos=False, eos=False)) < 8  # digits grouped
