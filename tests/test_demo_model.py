"""The demo model's pre-training recipe: expansion to the full vocabulary, determinism, checkpoint.

Uses a very small variant of the recipe (d 32, 2 layers, a few steps) so that each test takes
seconds; the full build is exercised by the demo itself.
"""
import dataclasses

import pytest
import torch

from neurosymbolic_llm.demo import pretraining as dp
from neurosymbolic_llm.demo import pretraining_data as data
from neurosymbolic_llm.demo import recipe
from neurosymbolic_llm.demo import report
from neurosymbolic_llm.llama.model import ModelArgs, Transformer

TINY = dp.PretrainSettings(dim=32, n_layers=2, n_heads=2, n_kv_heads=1, aux_layer=1, steps=3,
                           batch_size=8, warmup_steps=1, seed=3, common_token_limit=3000)


@pytest.fixture(scope="module")
def trained(tokenizer):
    return dp.train(TINY, tokenizer, progress=False)


def _full_model(sd, s=TINY):
    model = Transformer(ModelArgs.from_params(s.model_params()))
    model.load_state_dict(sd, strict=True)
    return model.eval()


def test_digit_features_cover_every_number():
    pos, length = dp.digit_features()
    assert pos.shape == (1000, 30) and length.shape == (1000, 3)
    assert pos.sum(1).tolist() == length.argmax(1).add(1).float().tolist()  # one digit per position
    assert pos[7].nonzero().flatten().tolist() == [7]
    assert pos[305].nonzero().flatten().tolist() == [5, 10, 23]  # units 5, tens 0, hundreds 3


def test_non_math_prompts_are_generated_and_held_out(tokenizer):
    from neurosymbolic_llm.symbolic.prompts import NON_MATH_PREFIX, NON_MATH_SYSTEM, non_math_questions

    s = dataclasses.replace(TINY, non_math_fraction=0.5, number_prompt_fraction=0.2)
    fmt = dp.ChatFormat(tokenizer)
    examples = dp.make_examples(s, fmt, 200)
    other = [ex for ex in examples if ex.aux == data.NO_PROBLEM]
    assert 60 <= len(other) <= 140
    reply = tokenizer.encode(data.NON_MATH_REPLY, bos=False, eos=False) + [tokenizer.eot_id]
    texts = [tokenizer.decode(ex.tokens[:ex.n_prompt]) for ex in other]
    assert all(ex.tokens[ex.n_prompt:] == reply for ex in other)
    assert len(set(texts)) == len(texts)  # varied prompts
    sys_header = "<|start_header_id|>system"
    assert any(sys_header in t for t in texts) and any(sys_header not in t for t in texts)  # layouts
    # the pipeline's held-out non-math questions, system message and prefix never appear
    held_out = [q for _, q in non_math_questions()] + [NON_MATH_SYSTEM, NON_MATH_PREFIX.strip()]
    assert not any(h in t for h in held_out for t in texts)


def test_no_problem_read_out_target():
    t = dp.aux_targets([data.NO_PROBLEM, (2, 305, 7)])
    n = len(dp.PROBLEM_TYPES)
    assert t[0, :n].sum() == 0 and t[1, :n].argmax() == 2
    digits = t[:, n:].view(2, 2 * dp.N_NUMBER_DIGITS, 11)
    assert (digits[0].argmax(-1) == 10).all() and (digits.sum(-1) == 1).all()
    assert digits[1].argmax(-1).tolist() == [5, 0, 3, 7, 10, 10]


def test_vocabulary_holds_common_words(trained, tokenizer):
    _, vocab, _ = trained
    words = dp.common_word_ids(tokenizer, TINY.common_token_limit)
    assert len(words) > 300 and (vocab.lookup[torch.tensor(words)] >= 0).all()
    the = tokenizer.encode(" the", bos=False, eos=False)[0]
    assert the in words
    reply = tokenizer.encode(data.NON_MATH_REPLY, bos=False, eos=False)
    assert vocab.is_target[vocab.lookup[torch.tensor(reply)]].all()  # answer tokens are targets
    assert not vocab.is_target[vocab.lookup[the]]


def test_expansion_keeps_compact_logits(trained, tokenizer):
    model, vocab, _ = trained
    model.eval()
    ex = dp.make_examples(TINY, dp.ChatFormat(tokenizer), 4)[:2]
    batch = dp.collate(ex, vocab)
    with torch.no_grad():
        compact = model(batch["tokens"])  # [B,S,Vc]
        full = _full_model(dp.full_state_dict(model, vocab))(vocab.full_ids[batch["tokens"]])  # [B,S,128256]
    torch.testing.assert_close(full[..., vocab.full_ids], compact, rtol=1e-5, atol=1e-5)
    # never-seen rows never win: the argmax is always a trained row
    assert torch.equal(full.argmax(-1), vocab.full_ids[compact.argmax(-1)])


def test_never_seen_rows_lose_on_random_states(trained):
    model, vocab, _ = trained
    sd = dp.full_state_dict(model, vocab)
    h = torch.randn(500, TINY.dim, generator=torch.Generator().manual_seed(0))
    logits = h @ sd["output.weight"].T  # [500, 128256]
    unseen = torch.ones(logits.shape[1], dtype=torch.bool)
    unseen[vocab.full_ids] = False
    never_target = vocab.full_ids[~vocab.is_target]
    # the filler row is the mean of the never-target rows, so it scores at most their maximum
    assert (logits[:, unseen].max(-1).values <= logits[:, never_target].max(-1).values + 1e-5).all()


def test_training_is_deterministic(tokenizer, trained):
    again, _, log = dp.train(TINY, tokenizer, progress=False)
    for (k, a), b in zip(trained[0].state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    other, _, _ = dp.train(dataclasses.replace(TINY, seed=4), tokenizer, progress=False)
    assert not torch.equal(other.layers[0].attention.wq.weight, again.layers[0].attention.wq.weight)
    assert all(torch.isfinite(torch.tensor(log["answer_loss"])))


def test_checkpoint_loads_with_llama_build_and_is_reused(tmp_path, capsys):
    from neurosymbolic_llm.llama.generation import Llama

    out = dp.build_demo_model(tmp_path / "demo", TINY, progress=False)
    assert {p.name for p in out.iterdir()} >= {"params.json", "consolidated.00.pth", "tokenizer.model",
                                               recipe.SETTINGS_FILE}
    llama = Llama.build(out, max_seq_len=256, max_batch_size=2, device="cpu")  # strict loading
    assert llama.args.vocab_size == 128256 and llama.args.dim == TINY.dim
    prompt = llama.formatter.encode_dialog_prompt([{"role": "user", "content": "What is 4 plus 3?"}])
    assert len(llama.generate([prompt], max_gen_len=3)) == 1
    mtime = (out / "consolidated.00.pth").stat().st_mtime_ns
    capsys.readouterr()
    dp.build_demo_model(out, TINY, progress=False)  # same settings: reused, not rebuilt
    assert "reusing" in capsys.readouterr().out
    assert (out / "consolidated.00.pth").stat().st_mtime_ns == mtime
    assert not dp.cached_build(out, dataclasses.replace(TINY, steps=4))


def test_default_recipe_has_non_math_prompts_and_arith_only_is_the_old_one():
    s = dp.PretrainSettings()
    assert 0 < s.non_math_fraction <= 0.15 and s.number_prompt_fraction >= 0.3 and s.aux_bias
    assert 0 < s.common_token_limit <= 12000  # a small vocabulary extension (30000 broke stage 3)
    old = dataclasses.replace(s, **recipe.PRESETS["arith_only"])
    assert old.non_math_fraction == 0 and old.common_token_limit == 0
    assert recipe.PRESETS["full"] == {}


def test_template_only_non_math_prompts(tokenizer):
    s = dataclasses.replace(TINY, **recipe.PRESETS["non_math_templates"], non_math_fraction=0.5)
    assert dp.common_word_ids(tokenizer, s.common_token_limit) == []
    examples = dp.make_examples(s, dp.ChatFormat(tokenizer), 100)
    other = [ex for ex in examples if ex.aux == data.NO_PROBLEM]
    assert len(other) > 20
    vocab = dp.CompactVocab(tokenizer, examples)
    assert len(vocab) < 3000  # the prompts' ids only: no common-word extension


def test_presets_are_valid_settings():
    for name, over in recipe.PRESETS.items():
        s = dataclasses.replace(dp.PretrainSettings(), **over)
        assert s.fingerprint() != dataclasses.replace(s, seed=s.seed + 1).fingerprint(), name


def test_demo_data_splits_are_disjoint_and_typed(tmp_path):
    from neurosymbolic_llm.cli import make_demo_data
    from neurosymbolic_llm.pipeline.options import TRAINED_TYPES_DEFAULT
    from neurosymbolic_llm.pipeline.problems_csv import load_problems_csv
    from neurosymbolic_llm.pipeline.splits import make_splits

    assert make_demo_data.main(["--out", str(tmp_path), "--n_train", "300", "--n_val", "20",
                                "--n_test", "100", "--seed", "5"]) == 0
    dfs = {s: load_problems_csv(tmp_path / f"{s}.csv", max_digits=4) for s in ("train", "val", "test")}
    assert [len(dfs[s]) for s in ("train", "val", "test")] == [300, 20, 100]
    assert set(dfs["train"].problem_type) | set(dfs["val"].problem_type) <= set(TRAINED_TYPES_DEFAULT)
    assert {"addition", "division"} <= set(dfs["test"].problem_type)
    keys = {s: set(zip(d.problem_type, d.x, d.y)) for s, d in dfs.items()}
    assert not (keys["train"] & keys["test"]) and not (keys["val"] & keys["test"]) and not (keys["train"] & keys["val"])
    again = make_splits(300, 20, 100, TRAINED_TYPES_DEFAULT, seed=5)
    assert again["test"].reset_index(drop=True).equals(dfs["test"].astype(again["test"].dtypes))


def test_report_runs(tmp_path, capsys):
    out = dp.build_demo_model(tmp_path / "demo", TINY, progress=False)
    report.report(out, n_test=20, n_train=100, vsa_settings=((256, 4),))
    text = capsys.readouterr().out
    assert "plain model: greedy accuracy" in text and "linear encoder" in text and "held-out types" in text
