"""Stage 3 on the tiny random checkpoint: one training step, the LR schedule, the entry script end to end."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from neurosymbolic_llm.pipeline.configs import FineTuneConfig
from neurosymbolic_llm.pipeline.errors import DataError, EngineMismatchError
from neurosymbolic_llm.stages.fine_tune import run
from neurosymbolic_llm.pipeline.maps import load_maps, model_info, save_maps
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.pipeline.runtime import build_llama
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.problems import generate_problems

VSA, LAYER = 64, 2


def stage3(argv) -> int:
    """fine_tune_decoders.py's main: the options, then the stage."""
    return run(parse_config(FineTuneConfig, argv))


@pytest.fixture(scope="module")
def llama(tiny_ckpt):
    return build_llama(FineTuneConfig(chpt_dir=str(tiny_ckpt), max_seq_len=512), max_batch_size=8, device="cpu")


def write_maps(folder, ckpt, *, seed=4, fingerprint=None, layers=(LAYER,), name="run"):
    from neurosymbolic_llm.llama.checkpoint import checkpoint_fingerprint

    engine = SymbolicEngine(VSA_dim=VSA, max_digits=4, seed=seed)
    info = model_info(fingerprint or checkpoint_fingerprint(ckpt), 64, 4)
    g = torch.Generator().manual_seed(0)
    enc = {l: torch.randn(VSA, 64, generator=g) / 8 for l in layers}
    dec = {l: torch.randn(64, VSA, generator=g) / 8 for l in layers}
    e = save_maps(folder / f"encoders_{name}.pth", "encoder", enc, engine.state_dict(), info)
    d = save_maps(folder / f"decoders_{name}.pth", "decoder", dec, engine.state_dict(), info)
    return e, d, engine


def write_csvs(folder):
    types = ["gcd", "modulo"]
    paths = {}
    for split, n, tps, seed in (("train", 8, types, 1), ("val", 2, types, 2), ("test", 2, types + ["addition"], 3)):
        per_type = split == "test"  # every evaluated type present
        df = pd.concat([generate_problems(n, [t] if per_type else tps, complexity=2, seed=seed + i)
                        for i, t in enumerate(tps if per_type else [None])], ignore_index=True)
        paths[split] = folder / f"{split}.csv"
        df.to_csv(paths[split], index=False)
    return paths


def ns_method(llama, engine, threshold=-math.inf, **kw):
    from neurosymbolic_llm.pipeline import methods
    from neurosymbolic_llm.pipeline.configs import InterventionOptions

    g = torch.Generator().manual_seed(0)
    opts = InterventionOptions(symbolic_encoding_layer=LAYER, symbolic_decoding_layers=[LAYER],
                               problem_score_threshold=threshold, **kw)
    return methods.neurosymbolic(llama.model, engine, torch.randn(VSA, 64, generator=g) / 8,
                                   {LAYER: torch.randn(64, VSA, generator=g) / 8}, opts, lr=1e-3,
                                   complexity=2, limit_solution_digits=True)


def examples(llama, engine, n=8, seed=0):
    from neurosymbolic_llm.pipeline.training import build_examples

    rows = generate_problems(n, ["gcd", "modulo", "bitwise_or"], complexity=2, seed=seed)
    return build_examples(rows, llama.formatter, "train", seed=0, complexity=2, limit_solution_digits=True,
                          problem_list=engine.possible_problems)


def mean_ce(llama, method, ex):
    from neurosymbolic_llm.pipeline.training import answer_cross_entropy

    with torch.no_grad(), method.attach():
        truth = ex.truth(range(len(ex)))
        return float(answer_cross_entropy(llama.model, ex.prompts, [a + [llama.tokenizer.eot_id] for a in ex.answers],
                                          fill_id=llama.tokenizer.eot_id, intervention=method.intervention,
                                          truth=truth).mean())


def test_one_step_lowers_ce_and_trains_only_the_decoder(llama):
    from neurosymbolic_llm.pipeline.configs import FineTuneOptions
    from neurosymbolic_llm.pipeline.training import train

    engine = SymbolicEngine(VSA_dim=VSA, max_digits=4, seed=4)
    method = ns_method(llama, engine, simulate_perfect_encoder=True)  # perfect encoder, gate open
    ex = examples(llama, engine)
    frozen = {k: v.clone() for k, v in llama.model.state_dict().items()}
    before = mean_ce(llama, method, ex)
    opts = FineTuneOptions(n_samples=4, inference_to_backprop_ratio=2, num_epochs=1, learning_rate=1e-3)
    log = train(llama, method, ex, opts, from_csv=True, seed=0)
    assert len(log) == 1  # ceil(8 rows / 8 per step)
    assert mean_ce(llama, method, ex) < before
    assert [n for n, p in method.intervention.named_parameters() if p.grad is not None] == ["decoders.2.weight"]
    assert all(p.grad is None for p in llama.model.parameters())
    assert all(torch.equal(v, frozen[k]) for k, v in llama.model.state_dict().items())


def test_lr_schedule_fires(llama):
    from neurosymbolic_llm.pipeline.configs import FineTuneOptions
    from neurosymbolic_llm.pipeline.training import lr_factor, train

    assert lr_factor({2: 0.5, 4: 0.1}, 1) == 1 and lr_factor({2: 0.5, 4: 0.1}, 4) == pytest.approx(0.05)
    engine = SymbolicEngine(VSA_dim=VSA, max_digits=4, seed=4)
    opts = FineTuneOptions(n_samples=2, num_steps=3, lr_decay={1: 0.5, 2: 0.5}, learning_rate=1e-3)
    log = train(llama, ns_method(llama, engine), examples(llama, engine, n=4), opts, from_csv=False, seed=0)
    assert [r["lr"] for r in log] == pytest.approx([5e-4, 2.5e-4, 2.5e-4])


def test_end_to_end(tiny_ckpt, tmp_path, capsys):
    enc, dec, engine = write_maps(tmp_path, tiny_ckpt)
    csv = write_csvs(tmp_path)
    common = ["--chpt_dir", str(tiny_ckpt), "--programs_dir", str(tmp_path), "--encoder_path", str(enc),
              "--decoder_path", str(dec), "--training_data_df_path", str(csv["train"]),
              "--val_data_df_path", str(csv["val"]), "--testing_data_df_path", str(csv["test"]),
              "--symbolic_encoding_layer", "2", "--symbolic_decoding_layers", "2", "--problem_type", "gcd,modulo",
              "--testing_problems", "gcd,modulo,addition", "--n_samples", "4", "--inference_to_backprop_ratio", "2",
              "--eval_batch_size", "8", "--max_seq_len", "512", "--problem_score_threshold", "-100"]
    assert stage3(common + ["--run_name", "R", "--test_baseline", "1", "--num_epochs", "2"]) == 0
    out = tmp_path / "results" / "R"
    res = pd.read_csv(out / "results.csv")
    assert list(res.columns) == ["method", "problem_type", "seen", "n", "accuracy", "cross_entropy"]
    assert sorted(zip(res["method"], res["problem_type"])) == sorted(
        (m, t) for m in ("neurosymbolic", "baseline") for t in ("gcd", "modulo", "addition"))
    assert res["accuracy"].between(0, 1).all() and (res["cross_entropy"] > 0).all()
    assert res.set_index(["method", "problem_type"])["seen"].loc["neurosymbolic"].to_dict() == {
        "gcd": True, "modulo": True, "addition": False}
    resp = pd.read_csv(out / "responses.csv")
    assert len(resp) == 2 * len(pd.read_csv(csv["test"]))
    ns = resp[resp["method"] == "neurosymbolic"]
    assert ns["gate_open"].all() and ns["decoded_type"].notna().all()
    for f in ("results.md", "results.png", "metrics.jsonl", "config_fine_tune.yaml", "gate_scores.csv", "gate_scores.png",
              "fingerprints.json", "training_state.pt"):
        assert (out / f).is_file(), f
    used = yaml.safe_load((out / "config_fine_tune.yaml").read_text())  # the engine of the map files, not the options'
    assert (used["VSA_dim"], used["max_digits"], used["vsa_seed"]) == (VSA, 4, 4) != (2048, 10, 4)
    prints = json.loads((out / "fingerprints.json").read_text())
    assert prints["codebook"] == engine.fingerprint() and prints["n_test_rows"] == 6
    assert prints["seen_types"] == ["gcd", "modulo"] and "training_data_df_path" in prints["seen_from"]
    tuned = load_maps(tmp_path / "decoders_run_post_fine_tuning_R.pth", "decoder", engine=engine)
    assert not torch.equal(tuned.weights[LAYER], load_maps(dec, "decoder").weights[LAYER])
    printed = capsys.readouterr().out
    assert "mean, 2 seen types" in printed
    # the console's closing lines: the gate's open rate per group (as gate_scores.csv has it) and
    # where every output went; the model's loading announced
    gates = pd.read_csv(out / "gate_scores.csv")
    for group, part in gates.groupby("group"):
        assert f"{group:<12} n={len(part):<5} open {part['gate_open'].mean():6.1%}" in printed, printed
    assert f"outputs in {out}: results.csv, results.md, results.png, responses.csv" in printed
    assert f"fine-tuned decoder: {tmp_path / 'decoders_run_post_fine_tuning_R.pth'}" in printed
    assert f"intervention artefact: {out / 'intervention'}" in printed
    assert "loading the model from" in printed and "loaded in" in printed


def test_baseline_only_and_unrelated_questions(tiny_ckpt, tmp_path):
    enc, dec, _ = write_maps(tmp_path, tiny_ckpt)
    csv = write_csvs(tmp_path)
    argv = ["--chpt_dir", str(tiny_ckpt), "--programs_dir", str(tmp_path), "--run_name", "B", "--test_baseline", "2",
            "--encoder_path", str(enc), "--decoder_path", str(dec), "--testing_data_df_path", str(csv["test"]),
            "--symbolic_encoding_layer", "2", "--symbolic_decoding_layers", "2", "--testing_problems", "gcd,addition",
            "--problem_type", "gcd", "--test_on_unrelated_questions", "1", "--max_seq_len", "512"]
    assert stage3(argv) == 0
    out = tmp_path / "results" / "B"
    assert set(pd.read_csv(out / "results.csv")["method"]) == {"baseline"}
    gates = pd.read_csv(out / "gate_scores.csv")
    assert set(gates["group"]) == {"seen math", "unseen math", "non-math"}
    assert not (tmp_path / "decoders_run_post_fine_tuning_B.pth").exists()


def test_clear_errors(tiny_ckpt, tmp_path):
    from neurosymbolic_llm.pipeline.errors import run_entry_point

    csv = write_csvs(tmp_path)
    base = ["--chpt_dir", str(tiny_ckpt), "--programs_dir", str(tmp_path), "--testing_data_df_path", str(csv["test"]),
            "--symbolic_encoding_layer", "2", "--symbolic_decoding_layers", "2", "--test_baseline", "2",
            "--test_on_unrelated_questions", "1", "--max_seq_len", "512"]
    enc, dec, _ = write_maps(tmp_path, tiny_ckpt)
    enc_other, _, _ = write_maps(tmp_path, tiny_ckpt, seed=5, name="other")
    with pytest.raises(EngineMismatchError):
        stage3(base + ["--encoder_path", str(enc_other), "--decoder_path", str(dec)])
    enc_fp, dec_fp, _ = write_maps(tmp_path, tiny_ckpt, fingerprint="another model", name="fp")
    with pytest.raises(EngineMismatchError, match="fingerprint"):
        stage3(base + ["--encoder_path", str(enc_fp), "--decoder_path", str(dec_fp)])
    with pytest.raises(DataError, match="no encoder for layer 3"):
        stage3(base + ["--encoder_path", str(enc), "--decoder_path", str(dec), "--symbolic_encoding_layer", "3",
                     "--symbolic_decoding_layers", "3"])
    with pytest.raises(DataError, match="no test rows"):
        stage3(base + ["--encoder_path", str(enc), "--decoder_path", str(dec), "--testing_problems", "lcm"])
    assert run_entry_point(stage3, base + ["--encoder_path", str(enc_other), "--decoder_path", str(dec)]) == 2


def _dp_worker(rank, world, port, ckpt, out_dir):
    import os

    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    from neurosymbolic_llm.pipeline.configs import FineTuneOptions
    from neurosymbolic_llm.pipeline.distributed import init_distributed
    from neurosymbolic_llm.pipeline.evaluation import evaluate
    from neurosymbolic_llm.pipeline.training import train

    info = init_distributed("cpu")
    llama = build_llama(FineTuneConfig(chpt_dir=str(ckpt), max_seq_len=512), max_batch_size=8, device="cpu")
    engine = SymbolicEngine(VSA_dim=VSA, max_digits=4, seed=4)
    df = evaluate(llama, ns_method(llama, engine, threshold=0.0), examples(llama, engine, n=7), max_new_tokens=3,
                  batch_size=4, seen_types=["gcd"], problem_list=engine.possible_problems, info=info)
    method = ns_method(llama, engine, simulate_perfect_encoder=True)
    # per data-parallel group 2 x 2 samples per step, so 2 groups make the single process's step of 8
    train(llama, method, examples(llama, engine), FineTuneOptions(n_samples=2, inference_to_backprop_ratio=2),
          from_csv=True, seed=0, info=info)
    if info.is_main:
        df.to_csv(out_dir / "dp.csv", index=False)
        torch.save(method.intervention.decoders["2"].weight.detach().clone(), out_dir / "dp_decoder.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_data_parallel_evaluation_equals_one_process(llama, tiny_ckpt, tmp_path):
    """torchrun-style: 2 gloo ranks split the rows, rank 0 gets them all, same as one process;
    a data-parallel training step gives the single-process decoder."""
    import socket

    import torch.multiprocessing as mp

    from neurosymbolic_llm.pipeline.evaluation import evaluate

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_dp_worker, args=(2, port, tiny_ckpt, tmp_path), nprocs=2, start_method="fork")
    engine = SymbolicEngine(VSA_dim=VSA, max_digits=4, seed=4)
    one = evaluate(llama, ns_method(llama, engine, threshold=0.0), examples(llama, engine, n=7), max_new_tokens=3,
                   batch_size=4, seen_types=["gcd"], problem_list=engine.possible_problems)
    dp = pd.read_csv(tmp_path / "dp.csv")
    assert list(dp["question"]) == list(one["question"]) and list(dp["generated"].fillna("")) == list(one["generated"])
    assert dp["correct"].tolist() == one["correct"].tolist()
    assert np.allclose(dp["cross_entropy"], one["cross_entropy"], atol=1e-4)
    assert np.allclose(dp["gate_score"], one["gate_score"], atol=1e-4)
    from neurosymbolic_llm.pipeline.configs import FineTuneOptions
    from neurosymbolic_llm.pipeline.training import train

    method = ns_method(llama, engine, simulate_perfect_encoder=True)
    train(llama, method, examples(llama, engine), FineTuneOptions(n_samples=8), from_csv=True, seed=0)
    torch.testing.assert_close(torch.load(tmp_path / "dp_decoder.pt"), method.intervention.decoders["2"].weight.detach(),
                               rtol=1e-5, atol=1e-6)


def test_varied_phrasings_and_numbers_in_words(llama):
    """--modify_question_format asks each test row in a drawn phrasing (deterministic, naming x and y);
    --test_with_non_numerical_rep writes the question's numbers, the examples' answers and the
    expected answer in words."""
    from neurosymbolic_llm.pipeline.training import build_examples
    from neurosymbolic_llm.symbolic.problems import number_words

    rows = generate_problems(12, ["gcd", "multiplication"], seed=0)
    kw = dict(seed=0, complexity=2, limit_solution_digits=True, problem_list=SymbolicEngine(64, 4).possible_problems)
    canon = build_examples(rows, llama.formatter, "test", **kw)
    varied = build_examples(rows, llama.formatter, "test", vary_format=True, **kw)
    assert canon.rows["question"].tolist() == rows["question"].tolist()
    assert varied.rows["question"].tolist() == build_examples(rows, llama.formatter, "test", vary_format=True,
                                                              **kw).rows["question"].tolist()
    changed = varied.rows["question"] != rows["question"]
    assert changed.sum() >= 8 and varied.answers == canon.answers
    for r in varied.rows.itertuples():
        assert str(r.x) in r.question and str(r.y) in r.question
        assert ("mod 1000" in r.question) == (r.problem_type == "multiplication")
    words = build_examples(rows, llama.formatter, "test", words=True, **kw)
    tok = llama.tokenizer
    for i, r in enumerate(words.rows.itertuples()):
        assert number_words(r.x) in r.question and str(r.x) not in r.question
        assert words.answers[i] == tok.encode(number_words(r.solution), bos=False, eos=False)
    prompt = tok.decode(words.prompts[0])
    assert "written in words" in prompt and not any(ch.isdigit() for ch in prompt.split("user<|end_header_id|>")[1])
