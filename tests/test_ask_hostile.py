"""nsllm ask against hostile questions (issue 30, class 7 and 8's doors): answers stream batch by
batch, a question that cannot be asked is an error of its own (named by its number) and the others
go on, odd text is read and shown safely, bad counts are refused before the model loads; and a
stray WORLD_SIZE is an error, not a 30-minute wait."""
import io
import math

import pytest
import torch

from neurosymbolic_llm.llama.generation import Llama
from neurosymbolic_llm.pipeline.artefact import TrainedIntervention
from neurosymbolic_llm.pipeline.configs import AskConfig, InterventionOptions
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError
from neurosymbolic_llm.pipeline.maps import model_info
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.stages.ask import ask, read_questions, run, shown
from neurosymbolic_llm.symbolic.engine import SymbolicEngine

GOOD = "What is 12 times 7 mod 1000?"


def config(*argv: str) -> AskConfig:
    return parse_config(AskConfig, list(argv))


def test_questions_file_bom_separators_stdin_and_encoding(tmp_path, monkeypatch):
    f = tmp_path / "q.txt"
    f.write_bytes(("\ufeff" + GOOD + "\r\n# a comment\n\nWhat is 3 plus\u2028 4?\n").encode())
    assert read_questions(config("--questions_file", str(f))) == [GOOD, "What is 3 plus\u2028 4?"]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(GOOD.encode() + b"\n")))
    assert read_questions(config("--questions_file", "-")) == [GOOD]
    f.write_bytes(GOOD.encode() + b"\nQuel est le PGCD de 12 et 8, d\xe9j\xe0?\n")
    with pytest.raises(DataError, match=rf"{f}: line 2 is not UTF-8 \(byte 0xe9\)"):
        read_questions(config("--questions_file", str(f)))


def test_control_characters_are_shown_escaped():
    assert shown("12 \x1b[31mtimes\x1b[0m 7\u2028\n") == "12 \\x1b[31mtimes\\x1b[0m 7\\u2028\\n"
    assert shown("naïve 12·7") == "naïve 12·7"


@pytest.mark.parametrize("option, value", [("--max_new_tokens", "-5"), ("--eval_batch_size", "0")])
def test_bad_counts_are_refused_before_anything_loads(tmp_path, option, value):
    with pytest.raises(ConfigError, match=f"option {option[2:]} must be at least"):  # while parsing
        run(config("--chpt_dir", str(tmp_path / "no_model"), "--intervention", str(tmp_path / "no_artefact"),
                   option, value, GOOD))


def test_stray_world_size_is_an_error(monkeypatch):
    from neurosymbolic_llm.pipeline.distributed import init_distributed

    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="WORLD_SIZE=2 is set but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not"):
        init_distributed("cpu")


@pytest.fixture(scope="module")
def tiny_llama(tiny_ckpt):
    return Llama.build(tiny_ckpt, max_seq_len=320, max_batch_size=2, device="cpu", dtype=torch.float32)


def tiny_artefact(llama) -> TrainedIntervention:
    g = torch.Generator().manual_seed(0)
    engine = SymbolicEngine(VSA_dim=64, max_digits=4, seed=4)
    opts = InterventionOptions(symbolic_encoding_layer=2, symbolic_decoding_layers=[2], problem_score_threshold=0.2,
                               problem_score_max=math.inf, merge="add")
    return TrainedIntervention(engine, torch.randn(64, 64, generator=g) / 8, {2: torch.randn(64, 64, generator=g) / 8},
                               {}, opts, {"complexity": 2, "limit_solution_digits": True, "seed": 5},
                               model_info(llama.fingerprint, 64, 4))


def test_answers_stream_and_a_bad_question_is_its_own_error(tiny_llama, monkeypatch):
    """Question 2 fills --max_seq_len, question 3 holds a 5,000-digit number: each is one error
    naming its number; questions 1 and 4 are answered, each as soon as its batch is done."""
    calls = []
    real = tiny_llama.generate
    monkeypatch.setattr(tiny_llama, "generate", lambda prompts, n: calls.append(len(prompts)) or real(prompts, n))
    questions = [GOOD, "What is the GCD of 12 and 8? " + "please " * 400,
                 "What is the GCD of 12 and " + "7" * 5000 + "?", "What is 515 mod 24?"]
    answers = ask(tiny_llama, tiny_artefact(tiny_llama), questions, batch_size=1, max_new_tokens=4)
    first = next(answers)
    assert first["question"] == GOOD and first["number"] == 1 and "error" not in first
    assert calls == [1, 1]  # only question 1's batch has run (with and without the intervention)
    rest = list(answers)
    assert [a["number"] for a in rest] == [2, 3, 4]
    assert rest[0]["error"].startswith("question 2: its prompt has ") and "--max_seq_len 320" in rest[0]["error"]
    assert rest[1]["error"].startswith("question 3: its prompt has ")  # read as no problem, too long to ask
    assert "error" not in rest[2] and rest[2]["recognised"]["answer"] == 515 % 24
