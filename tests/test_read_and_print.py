"""'read and print' (methods.read_and_print) on the tiny random checkpoint: the encoder's reading
goes to the solver and the solver's answer is the reply. An encoder fitted exactly to some questions'
hidden states reads them right, so they are answered right; every other question gets the solver's
answer for what was read (right or not); a closed gate leaves the question to the plain model."""
import math

import pytest
import torch
from test_prefix_cache import llama  # noqa: F401  (the tiny model)

from neurosymbolic_llm.pipeline.configs import InterventionOptions
from neurosymbolic_llm.pipeline.evaluation import evaluate
from neurosymbolic_llm.pipeline.training import build_examples
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.problems import generate_problems
from neurosymbolic_llm.symbolic.solver import solve_one

VSA, LAYER, FITTED = 256, 2, 6
TYPES = ["gcd", "lcm", "multiplication", "bitwise_or", "modulo"]


@pytest.fixture(scope="module")
def engine():
    return SymbolicEngine(VSA_dim=VSA, max_digits=4, seed=4)


@pytest.fixture(scope="module")
def ex(llama, engine):
    rows = generate_problems(12, TYPES, complexity=2, seed=3)
    return build_examples(rows, llama.formatter, "test", seed=0, complexity=2, limit_solution_digits=True,
                          problem_list=engine.possible_problems)


@torch.no_grad()
def _last_states(llama, prompts) -> torch.Tensor:
    """The residual entering block LAYER at each prompt's last token: [N, D]."""
    from neurosymbolic_llm.llama.generation import left_pad

    tokens, pad = left_pad(prompts, llama.tokenizer.pad_id)
    seen = []
    handle = llama.model.register_residual_hook(LAYER, lambda h, ctx: seen.append(h[:, -1].clone()))
    try:
        llama.model(tokens, 0, pad_lengths=pad, stop_at_layer=LAYER)
    finally:
        handle.remove()
    return seen[0]


@pytest.fixture(scope="module")
def encoder(llama, engine, ex) -> torch.Tensor:
    """[V, D] reading the first FITTED questions exactly (minimum-norm least squares, FITTED < D)."""
    h = _last_states(llama, ex.prompts[:FITTED]).double()  # [F, D]
    t, x, y = ex.truth(range(FITTED))
    target = engine.encode_problem(x, y, t).double()  # [F, V]
    return (torch.linalg.pinv(h) @ target).T.float()


def _evaluate(llama, engine, ex, encoder, **gate):
    from neurosymbolic_llm.pipeline import methods

    opts = InterventionOptions(symbolic_encoding_layer=LAYER, symbolic_decoding_layers=[LAYER], **gate)
    method = methods.read_and_print(llama, engine, encoder, {LAYER: torch.zeros(64, VSA)}, opts, complexity=2,
                                    limit_solution_digits=True)
    return evaluate(llama, method, ex, max_new_tokens=8, batch_size=5, seen_types=TYPES,
                    problem_list=engine.possible_problems)


def _solver(df) -> list[int]:
    return [solve_one(t, int(x), int(y), complexity=2, limit_solution_digits=True)
            for t, x, y in zip(df.decoded_type, df.decoded_x, df.decoded_y)]


def test_a_question_read_right_is_answered_right_and_any_other_gets_the_solvers_answer(llama, engine, ex, encoder):
    df = _evaluate(llama, engine, ex, encoder, problem_score_threshold=-math.inf)
    assert len(df) == len(ex) and set(df.method) == {"read_and_print"}
    read_right = ((df.decoded_type == ex.rows.problem_type) & (df.decoded_x == ex.rows.x)
                  & (df.decoded_y == ex.rows.y)).to_numpy()
    assert read_right[:FITTED].all()
    assert df.correct[:FITTED].all()
    assert df.parsed.tolist() == _solver(df)  # printed: the solver's answer for what was read
    assert df.generated.tolist() == [str(a) for a in _solver(df)]
    assert (df.correct == (df.parsed == df.expected)).all()
    assert not read_right[FITTED:].all()  # the others are read by an encoder that never saw them
    assert df.cross_entropy.isna().all()  # no answer distribution


def test_a_closed_gate_leaves_the_question_to_the_plain_model(llama, engine, ex, encoder):
    from neurosymbolic_llm.pipeline.methods import plain

    df = _evaluate(llama, engine, ex, encoder, problem_score_threshold=math.inf)
    base = evaluate(llama, plain(), ex, max_new_tokens=8, batch_size=5, seen_types=TYPES,
                    problem_list=engine.possible_problems)
    assert not df.gate_open.any()
    assert df.generated.tolist() == base.generated.tolist()


def test_read_and_print_runs_before_the_main_method_and_needs_the_maps():
    from neurosymbolic_llm.pipeline.configs import FineTuneConfig

    cfg = FineTuneConfig(read_and_print=True, test_baseline=1, lora_baseline=True)
    assert cfg.methods() == ["baseline", "read_and_print", "lora"]  # before LoRA changes the model
    assert cfg.needs_maps() and FineTuneConfig(read_and_print=True, test_baseline=2).methods() == [
        "baseline", "read_and_print"]
