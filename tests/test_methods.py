"""Baselines on the tiny random checkpoint: peft LoRA, the adapter row, chain-of-thought parsing and CE span."""
import math

import pytest
import torch

from neurosymbolic_llm.pipeline.configs import FineTuneOptions
from neurosymbolic_llm.pipeline.training import build_examples, train
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.problems import generate_problems
from neurosymbolic_llm.symbolic.prompts import parse_cot_answer

VSA, LAYER = 64, 2


def fresh_llama(tiny_ckpt):
    from neurosymbolic_llm.pipeline.configs import FineTuneConfig
    from neurosymbolic_llm.pipeline.runtime import build_llama

    return build_llama(FineTuneConfig(chpt_dir=str(tiny_ckpt), max_seq_len=512), max_batch_size=8, device="cpu")


def examples(llama, n=4, prompt="few_shot"):
    rows = generate_problems(n, ["gcd", "modulo"], complexity=2, seed=0)
    return build_examples(rows, llama.formatter, "train", seed=0, complexity=2, limit_solution_digits=True,
                          problem_list=SymbolicEngine(VSA_dim=VSA, max_digits=4).possible_problems, prompt=prompt)


@torch.no_grad()
def logits(llama, ex, method):
    from neurosymbolic_llm.llama.generation import left_pad

    tokens, pad = left_pad(ex.prompts, llama.tokenizer.pad_id)
    with method.attach():
        return llama.model(tokens, pad_lengths=pad, output_positions=torch.tensor([tokens.shape[1] - 1]))


def test_peft_lora_trains_only_lora_and_changes_outputs(tiny_ckpt):
    from neurosymbolic_llm.pipeline.configs import BaselineOptions
    from neurosymbolic_llm.pipeline.methods import lora, lora_disabled, plain

    llama = fresh_llama(tiny_ckpt)
    ex = examples(llama)
    before = logits(llama, ex, plain())
    frozen = {k: v.clone() for k, v in llama.model.state_dict().items() if "lora_" not in k}
    method = lora(llama.model, BaselineOptions(lora_rank=4, lora_learning_rate=1e-2), seed=0)
    assert method.params and all(p.dtype == torch.float32 for p in method.params)
    names = {n for n, p in llama.model.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n for n in names)
    assert {n.split(".")[-4] for n in names} == {"wq", "wk", "wv", "wo", "w1", "w2", "w3"}
    assert torch.equal(logits(llama, ex, method), before)  # lora_B starts at zero
    train(llama, method, ex, FineTuneOptions(n_samples=4, learning_rate=1e-2), from_csv=True, seed=0)
    assert not torch.allclose(logits(llama, ex, method), before)
    after = {k.replace(".base_layer", ""): v for k, v in llama.model.state_dict().items() if "lora_" not in k}
    assert after.keys() == frozen.keys() and all(torch.equal(after[k], v) for k, v in frozen.items())
    with lora_disabled(llama.model):
        assert torch.equal(logits(llama, ex, plain()), before)


@pytest.mark.parametrize("init", ["stage2", "fresh"])
def test_adapter_trains_encoder_and_decoder(tiny_ckpt, init):
    from neurosymbolic_llm.pipeline.configs import InterventionOptions
    from neurosymbolic_llm.pipeline.methods import adapter, plain

    llama = fresh_llama(tiny_ckpt)
    ex = examples(llama)
    g = torch.Generator().manual_seed(0)
    enc, dec = torch.randn(VSA, 64, generator=g) / 8, {LAYER: torch.randn(64, VSA, generator=g) / 8}
    opts = InterventionOptions(symbolic_encoding_layer=LAYER, symbolic_decoding_layers=[LAYER],
                               problem_score_threshold=math.inf)  # ignored: the adapter has no gate
    method = adapter(llama.model, enc, dec, opts, lr=1e-2, init=init, seed=0)
    iv = method.intervention
    assert iv.mode == "adapter" and torch.equal(iv.encoder.weight, enc) == (init == "stage2")
    start = {n: p.detach().clone() for n, p in iv.named_parameters()}
    assert set(start) >= {"encoder.weight", "decoders.2.weight"}
    assert not torch.equal(logits(llama, ex, method), logits(llama, ex, plain()))  # always on
    assert bool(iv.take_records()["gate"].all())
    train(llama, method, ex, FineTuneOptions(n_samples=4, learning_rate=1e-2), from_csv=True, seed=0)
    for n in ("encoder.weight", "decoders.2.weight"):
        assert not torch.equal(dict(iv.named_parameters())[n], start[n]), n
    assert all(p.grad is None for p in llama.model.parameters())


def test_cot_parser_and_ce_span(tokenizer):
    from neurosymbolic_llm.pipeline.evaluation import _cot_continuations

    assert parse_cot_answer("First 3*4 = 12.\nFinal Answer: 12") == 12
    assert parse_cot_answer("so the result is 12") is None  # no marker, prose
    assert parse_cot_answer(" 12") == 12  # no marker, a bare integer: the whole text is the answer
    assert parse_cot_answer("Final Answer: **42**. That is all, 7 more words.") == 42  # trailing text
    assert parse_cot_answer("Final Answer: 1,234") == 1234
    with_marker, without = _cot_continuations(tokenizer, ["Think. Final Answer: 12 done", "Think hard"])
    assert tokenizer.decode(with_marker) == "Think. Final Answer: "
    assert tokenizer.decode(without) == "Think hard\n\nFinal Answer: "
    # the answer tokens that follow are the number's own tokens (the space is its own token)
    assert tokenizer.encode("Final Answer: 12", bos=False, eos=False)[-1:] == tokenizer.encode("12", bos=False, eos=False)


def test_cot_method_evaluates(tiny_ckpt):
    from neurosymbolic_llm.pipeline.evaluation import evaluate
    from neurosymbolic_llm.pipeline.methods import plain

    llama = fresh_llama(tiny_ckpt)
    ex = examples(llama, n=2, prompt="cot")
    df = evaluate(llama, plain("cot", prompt="cot"), ex, max_new_tokens=6, batch_size=2, seen_types=["gcd"],
                  problem_list=SymbolicEngine(VSA_dim=VSA, max_digits=4).possible_problems)
    assert list(df["method"]) == ["cot", "cot"] and (df["cross_entropy"] > 0).all()
    assert df["gate_score"].isna().all()
