"""nsllm ask on the tiny random checkpoint: its gate scores, decodes and answers against the
pipeline's own evaluation of the same questions (evaluation.evaluate / gate_scores on Examples built
by training.build_examples), the run lookup, the artefact stage 3 writes and the export command."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_fine_tuning import LAYER, stage3, write_csvs, write_maps

from neurosymbolic_llm.pipeline import methods
from neurosymbolic_llm.pipeline.artefact import load_intervention
from neurosymbolic_llm.stages.ask import ask
from neurosymbolic_llm.stages.export import export
from neurosymbolic_llm.pipeline.configs import AskConfig, ExportConfig, FineTuneConfig
from neurosymbolic_llm.pipeline.errors import ConfigError
from neurosymbolic_llm.pipeline.evaluation import answer_token_budget, evaluate, gate_scores
from neurosymbolic_llm.pipeline.fine_tune_inputs import load_maps_for
from neurosymbolic_llm.pipeline.maps import model_info_of
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.pipeline.runtime import build_llama
from neurosymbolic_llm.pipeline.saved_runs import saved_config, with_run_config
from neurosymbolic_llm.pipeline.training import build_examples
from neurosymbolic_llm.symbolic.problems import generate_problems
from neurosymbolic_llm.symbolic.prompts import non_math_dialog
from neurosymbolic_llm.symbolic.solver import solve_one

ROOT = Path(__file__).resolve().parents[1]
NON_MATH = "What makes a building beautiful?"


@pytest.fixture(scope="module")
def run_dir(tiny_ckpt, tmp_path_factory):
    """A stage-3 run "R" (no training: the stage-2 maps as they are) whose maps are those of the
    stage-2 run "S" (models/encoders_S.pth), with a gate that opens above score 0."""
    root = tmp_path_factory.mktemp("ask")
    (root / "models").mkdir()
    enc, dec, _ = write_maps(root / "models", tiny_ckpt, name="S")
    csv = write_csvs(root)
    (root / "results" / "S").mkdir(parents=True)
    (root / "results" / "S" / "config_encoders.yaml").write_text("run_name: S\n")
    assert stage3(["--chpt_dir", str(tiny_ckpt), "--programs_dir", str(root), "--run_name", "R",
                   "--encoder_path", str(enc), "--decoder_path", str(dec), "--num_epochs", "0",
                   "--testing_data_df_path", str(csv["test"]), "--symbolic_encoding_layer", str(LAYER),
                   "--symbolic_decoding_layers", str(LAYER), "--testing_problems", "gcd,modulo,addition",
                   "--problem_type", "gcd,modulo", "--problem_score_threshold", "2.6", "--max_seq_len", "512",
                   "--eval_batch_size", "8", "--record_score_per_problem", "0"]) == 0
    return root


def rows(n=6):
    return generate_problems(n, ["gcd", "modulo", "bitwise_or"], complexity=2, seed=7)


def test_ask_agrees_with_the_pipelines_evaluation(run_dir):
    cfg = parse_config(FineTuneConfig, ["--config", str(run_dir / "results" / "R" / "config_fine_tune.yaml")])
    llama = build_llama(cfg, max_batch_size=8, device="cpu")
    art = load_intervention(run_dir / "results" / "R" / "intervention", model_info=model_info_of(llama))
    df = rows()
    answers = list(ask(llama, art, list(df["question"]) + [NON_MATH], batch_size=4))

    # the independent path: the run's map files, the pipeline's Examples (split "ask"), evaluate()
    maps = load_maps_for(cfg, llama)
    ns = methods.neurosymbolic(llama.model, maps.engine, maps.encoder, maps.decoders, cfg, lr=0.0, complexity=2,
                               limit_solution_digits=True, train=False)
    ex = build_examples(df, llama.formatter, "ask", seed=cfg.seed, complexity=2, limit_solution_digits=True,
                        problem_list=maps.engine.possible_problems)
    budget = answer_token_budget(llama.tokenizer, 2, True)
    kw = dict(max_new_tokens=budget, batch_size=8, seen_types=["gcd", "modulo"], problem_list=maps.engine.possible_problems)
    with_iv, plain = evaluate(llama, ns, ex, **kw), evaluate(llama, methods.plain(), ex, **kw)
    assert with_iv["gate_open"].any() and not with_iv["gate_open"].all()  # both kinds of rows are checked
    for a, r, p, row in zip(answers, with_iv.itertuples(), plain.itertuples(), df.itertuples()):
        assert a["asked_as"] == f"few-shot {row.problem_type}"
        assert a["recognised"] == {"type": row.problem_type, "x": row.x, "y": row.y, "answer": row.solution}
        assert a["gate"]["score"] == pytest.approx(r.gate_score, rel=1e-5, abs=1e-6)
        assert a["gate"]["open"] == r.gate_open
        d = a["decoded"]
        assert (d["type"], d["x"], d["y"]) == (r.decoded_type, r.decoded_x, r.decoded_y)
        assert d["type_score"] == pytest.approx(r.gate_score, rel=1e-5, abs=1e-6)
        assert a["symbolic_answer"] == solve_one(d["type"], d["x"], d["y"], complexity=2, limit_solution_digits=True)
        assert a["with_intervention"]["text"] == r.generated
        assert a["without_intervention"]["text"] == p.generated
        assert a["with_intervention"]["answer"] == (None if pd.isna(r.parsed) else r.parsed)
    # a question in no known phrasing: the gate statistics' non-math prompt and score
    last = answers[-1]
    assert last["asked_as"] == "non-math prompt" and last["recognised"] is None
    score = gate_scores(llama, ns, [llama.formatter.encode_dialog_prompt(non_math_dialog(NON_MATH))], batch_size=1)
    assert last["gate"]["score"] == pytest.approx(float(score[0]), rel=1e-5, abs=1e-6)


def test_run_lookup(run_dir):
    r = run_dir / "results" / "R" / "config_fine_tune.yaml"
    assert saved_config("R", str(run_dir)) == r
    perfect = run_dir / "results" / "P" / "config_fine_tune.yaml"  # a diagnostic run on the same maps
    perfect.parent.mkdir()
    perfect.write_text(r.read_text().replace("simulate_perfect_encoder: false", "simulate_perfect_encoder: true"))
    assert "simulate_perfect_encoder: true" in perfect.read_text()
    assert saved_config("S", str(run_dir)) == r  # a stage-2 run: the stage-3 run that used its maps
    other = run_dir / "results" / "Q" / "config_fine_tune.yaml"  # another neurosymbolic run on them
    other.parent.mkdir()
    other.write_text(r.read_text())
    with pytest.raises(ConfigError, match="stage-3 runs using its maps: Q, R"):
        saved_config("S", str(run_dir))
    other.unlink()
    assert with_run_config(["--run", "S", "--programs_dir", str(run_dir), "Q?"])[:2] == ["--config", str(r)]
    with pytest.raises(ConfigError, match="nope"):
        saved_config("nope", str(run_dir))
    cfg = parse_config(AskConfig, with_run_config(["--run", "R", "--programs_dir", str(run_dir), "--json", "A?", "B?"]))
    assert cfg.questions == ["A?", "B?"] and cfg.json and cfg.symbolic_encoding_layer == LAYER
    assert cfg.problem_score_threshold == 2.6 and cfg.run_name == "R"


def test_command_prints_the_functions_answers(run_dir):
    """python Programs/ask.py --run S (the stage-2 name) --json: the answers of ask() on the same question."""
    q = "What is the GCD of 84 and 36?"
    out = subprocess.run([sys.executable, str(ROOT / "Programs" / "ask.py"), "--run", "S", "--programs_dir",
                          str(run_dir), "--json", q], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    cfg = parse_config(FineTuneConfig, ["--config", str(run_dir / "results" / "R" / "config_fine_tune.yaml")])
    llama = build_llama(cfg, max_batch_size=1, device="cpu")
    want = list(ask(llama, load_intervention(run_dir / "results" / "R" / "intervention"), [q]))
    assert got == json.loads(json.dumps(want))


def test_user_errors_are_one_line(run_dir, capsys):
    from neurosymbolic_llm.stages.ask import run
    from neurosymbolic_llm.pipeline.errors import run_entry_point

    def main(argv):
        return run(parse_config(AskConfig, with_run_config(argv)), [a[2:] for a in argv if a.startswith("--")])

    for argv, what in ((["--run", "nope", "Q?"], "nope"), (["--run", "R"], "no question given"),
                       (["--run", "R", "--examples_type", "sums", "Q?"], "--examples_type sums"),
                       (["--run", "R", "--symbolic_decoding_layers", "3", "Q?"], "--symbolic_decoding_layers: an "
                                                                                 "intervention artefact fixes it")):
        assert run_entry_point(main, argv + ["--programs_dir", str(run_dir)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and what in err[0], err


def test_export_writes_the_runs_artefact(run_dir, tmp_path):
    """The artefact exported from the run's map files and saved configuration equals the one stage 3
    wrote from its live intervention (no training: the same maps)."""
    written = load_intervention(run_dir / "results" / "R" / "intervention")
    assert export(parse_config(ExportConfig, with_run_config(["--run", "R", "--programs_dir", str(run_dir),
                                                               "--out", str(tmp_path / "x")]))) == 0
    exported = load_intervention(tmp_path / "x")
    assert torch.equal(exported.encoder, written.encoder)
    assert all(torch.equal(exported.decoders[l], written.decoders[l]) for l in written.decoders)
    assert torch.equal(exported.engine.codebook, written.engine.codebook)
    assert exported.options == written.options and exported.prompt == written.prompt
    assert exported.extra["trained_types"] == written.extra["trained_types"] == ["gcd", "modulo"]
    assert exported.model["fingerprint"] == written.model["fingerprint"]
    assert exported.checkpoint == written.checkpoint


def test_parse_question_inverts_every_phrasing():
    """ask recognises a question in any of the dataset's phrasings (canonical and
    --modify_question_format's), whatever the spacing and case."""
    from neurosymbolic_llm.symbolic.problems import QUESTION_VARIANTS, parse_question, question_text

    for kind, pool in QUESTION_VARIANTS.items():
        for variant in range(len(pool)):
            q = question_text(kind, 515, 24, variant=variant)
            assert parse_question(q) == (kind, 515, 24), q
    assert parse_question("  what is 12   PLUS 7? ") == ("addition", 12, 7)
    assert parse_question("What is 515 times 24?") is None  # multiplication is asked mod 1000
    assert parse_question("What is 515 times 24?", limit_solution_digits=False) == ("multiplication", 515, 24)
    assert parse_question(NON_MATH) is None


def test_export_restamps_maps_of_an_older_version(tiny_ckpt, tmp_path):
    """Maps whose model is named by the older fingerprint (of the files) are refused; exported with
    --allow_other_weights on the model they were made on, the artefact names that model's content."""
    from neurosymbolic_llm.pipeline.errors import EngineMismatchError

    enc, dec, _ = write_maps(tmp_path, tiny_ckpt, fingerprint="0" * 64, name="old")
    argv = ["--chpt_dir", str(tiny_ckpt), "--encoder_path", str(enc), "--decoder_path", str(dec),
            "--symbolic_encoding_layer", str(LAYER), "--symbolic_decoding_layers", str(LAYER), "--out", str(tmp_path / "x")]
    llama = build_llama(FineTuneConfig(chpt_dir=str(tiny_ckpt), max_seq_len=64), max_batch_size=1, device="cpu")
    assert export(parse_config(ExportConfig, argv)) == 0  # without the override: the maps' record as it is
    with pytest.raises(EngineMismatchError, match="older fingerprint.*retrain.*--allow_other_weights 1"):
        load_intervention(tmp_path / "x", model_info=model_info_of(llama))
    assert export(parse_config(ExportConfig, argv + ["--allow_other_weights", "1"])) == 0
    art = load_intervention(tmp_path / "x", model_info=model_info_of(llama))
    assert art.model["fingerprint"] == llama.fingerprint


def test_an_artefacts_gate_can_be_moved(run_dir):
    """--problem_score_threshold on the command line moves the artefact's gate (nothing else may change)."""
    from neurosymbolic_llm.stages.ask import with_gate_options

    cfg = parse_config(AskConfig, with_run_config(["--run", "R", "--programs_dir", str(run_dir),
                                                   "--problem_score_threshold", "-5", "Q?"]))
    art = load_intervention(run_dir / "results" / "R" / "intervention")
    assert art.options.problem_score_threshold == 2.6
    assert with_gate_options(art, cfg, ["run", "problem_score_threshold"]).options.problem_score_threshold == -5
    assert art.options.symbolic_decoding_layers == [LAYER]
