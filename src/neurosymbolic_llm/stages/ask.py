"""Ask a trained intervention questions and see the mechanism at work (nsllm ask).

Per question: the prompt the pipeline would build (training.build_examples' rule: the dataset's
few-shot dialog with two solved examples of the question's type, drawn from row_rng(seed, "ask",
question index); a question in none of the dataset's phrasings is asked as the gate statistics ask
non-math questions, unless --examples_type names a type); then one generation with the
intervention attached (the pipeline's SymbolicIntervention: its records at the last prompt position
give the gate score, the decoded x, y and type, from which the symbolic answer is solved exactly as
the hook solves it) and one without (the plain model).

Where the intervention comes from, first match wins: --intervention DIR (an artefact, artefact.py);
--run R whose results/R/intervention/ exists; the maps of the configuration (--encoder_path,
--decoder_path; with --run R those of R's config_fine_tune.yaml, the decoder it fine-tuned when there
is one). `saved_runs.with_run_config(argv)` makes R's saved configuration the defaults of the command line,
so `nsllm ask --run demo_ns "What is 12 times 7 mod 1000?"` needs nothing else; a stage-2 run name
(no stage 3 of its own) is followed to the one neurosymbolic stage-3 run that used its maps.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import torch

from neurosymbolic_llm.pipeline import artefact as artefacts
from neurosymbolic_llm.pipeline.configs import AskConfig, InterventionOptions
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError
from neurosymbolic_llm.pipeline.evaluation import answer_token_budget
from neurosymbolic_llm.pipeline.intervention_source import ARTEFACT, load_source
from neurosymbolic_llm.pipeline.maps import check_model, model_info_of
from neurosymbolic_llm.pipeline.runtime import build_llama
from neurosymbolic_llm.pipeline.saved_runs import located
from neurosymbolic_llm.symbolic.problems import parse_question, solve_one
from neurosymbolic_llm.symbolic.prompts import few_shot_dialog, non_math_dialog, parse_answer, row_rng
from neurosymbolic_llm.symbolic.solver import solve

SPLIT = "ask"  # the few-shot examples of question i come from row_rng(seed, SPLIT, i)


# ----------------------------------------------------------------------------- asking
def dialog(question: str, index: int, art: artefacts.TrainedIntervention, examples_type: str = "auto"):
    """(messages, how it is asked, (type, x, y) of a recognised question or None)."""
    p = art.prompt
    kw = dict(complexity=p["complexity"], limit_solution_digits=p["limit_solution_digits"])
    known = parse_question(question, **kw)
    kind = examples_type if examples_type != "auto" else known[0] if known else None
    if kind is None:
        return non_math_dialog(question), "non-math prompt", known
    return few_shot_dialog(kind, question, row_rng(p["seed"], SPLIT, index), **kw), f"few-shot {kind}", known


@torch.no_grad()
def ask(llama, art: artefacts.TrainedIntervention, questions: Sequence[str], *, examples_type: str = "auto",
        max_new_tokens: int = 0, batch_size: int = 16) -> list[dict]:
    """One dict per question (see the module docstring; `answer_lines` prints one)."""
    method = artefacts.build_method(art, llama)
    iv, engine, p = method.intervention, art.engine, art.prompt
    n_new = max_new_tokens or answer_token_budget(llama.tokenizer, p["complexity"], p["limit_solution_digits"])
    names = list(engine.possible_problems)
    out = []
    for b0 in range(0, len(questions), batch_size):
        batch = list(questions[b0:b0 + batch_size])
        asked = [dialog(q, b0 + i, art, examples_type) for i, q in enumerate(batch)]
        prompts = [llama.formatter.encode_dialog_prompt(m) for m, _, _ in asked]
        with method.attach():
            iv.set_truth()
            with_iv = llama.generate(prompts, n_new)
            rec = iv.take_records()
        without = llama.generate(prompts, n_new)  # no hooks: the plain model
        symbolic = solve(rec["type_id"], rec["x"], rec["y"], problem_list=names, complexity=p["complexity"],
                         limit_solution_digits=p["limit_solution_digits"])
        type_scores = engine.problem_type_scores(rec["vsa"]).cpu()                   # [B, T]
        x_scores = engine.digit_scores(rec["vsa"], "n1").amax(-1).amin(-1).cpu()  # [B] weakest digit
        y_scores = engine.digit_scores(rec["vsa"], "n2").amax(-1).amin(-1).cpu()
        for i, (q, (_, how, known)) in enumerate(zip(batch, asked)):
            order = type_scores[i].argsort(descending=True).tolist()
            texts = [llama.tokenizer.decode(g[i]) for g in (with_iv, without)]
            out.append({
                "question": q, "asked_as": how,
                "recognised": None if known is None else {
                    "type": known[0], "x": known[1], "y": known[2],
                    "answer": solve_one(known[0], known[1], known[2], complexity=p["complexity"],
                                        limit_solution_digits=p["limit_solution_digits"])},
                "gate": {"score": float(rec["score"][i]), "open": bool(rec["gate"][i]),
                         "threshold": iv.gate.lower, "maximum": None if math.isinf(iv.gate.upper) else iv.gate.upper,
                         "type_margin": float(rec["type_margin"][i]), "rule": iv.gate.describe()},
                "decoded": {"type": names[order[0]], "type_score": float(type_scores[i, order[0]]),
                            "runner_up": names[order[1]] if len(order) > 1 else None,
                            "runner_up_score": float(type_scores[i, order[1]]) if len(order) > 1 else None,
                            "x": int(rec["x"][i]), "x_score": float(x_scores[i]),
                            "y": int(rec["y"][i]), "y_score": float(y_scores[i])},
                "symbolic_answer": int(symbolic[i]),
                "with_intervention": {"text": texts[0], "answer": parse_answer(texts[0])},
                "without_intervention": {"text": texts[1], "answer": parse_answer(texts[1])},
            })
    return out


def answer_lines(a: dict) -> list[str]:
    """The text form of one answer of `ask`."""
    g, d = a["gate"], a["decoded"]
    bounds = g["rule"]
    lines = [f"Q: {a['question']}   [{a['asked_as']}]",
             f"  gate       {'OPEN' if g['open'] else 'closed'}: score {g['score']:.3f} (opens when {bounds})",
             f"  decoded    type {d['type']} ({d['type_score']:.3f}; next {d['runner_up']} "
             f"{d['runner_up_score']:.3f})   x {d['x']} ({d['x_score']:.2f})   y {d['y']} ({d['y_score']:.2f})"
             f"   [digit scores: the weakest digit's]",
             f"  symbolic   {d['type']}({d['x']}, {d['y']}) = {a['symbolic_answer']}"
             f"{'' if g['open'] else '   (not written: the gate is closed)'}",
             f"  model      with the intervention: {a['with_intervention']['text']!r}   "
             f"without: {a['without_intervention']['text']!r}"]
    r = a["recognised"]
    if r is not None:
        lines.append(f"  question   {r['type']}({r['x']}, {r['y']}) = {r['answer']} (read from its phrasing)")
    return lines


def read_questions(cfg: AskConfig) -> list[str]:
    questions = list(cfg.questions)
    if cfg.questions_file:
        path = Path(cfg.questions_file).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: questions file not found")
        questions += [line.strip() for line in path.read_text().splitlines()
                      if line.strip() and not line.lstrip().startswith("#")]
    if not questions:
        raise ConfigError("no question given: pass questions as arguments or --questions_file FILE")
    return questions


GATE_OPTIONS = ("problem_score_threshold", "problem_score_max", "gate_min_type_margin", "gate_min_digit_margin")


def with_gate_options(art: artefacts.TrainedIntervention, cfg: AskConfig, given: Sequence[str]):
    """An artefact with the gate bounds given on the command line (`given`: option names); its other
    intervention settings are what its maps were trained with, so giving one is an error."""
    fixed = [n for n in given if n in InterventionOptions.__dataclass_fields__ and n not in GATE_OPTIONS]
    if fixed:
        raise ConfigError(f"--{fixed[0]}: an intervention artefact fixes it (its maps were trained with "
                          f"{getattr(art.options, fixed[0])!r}); only {', '.join('--' + n for n in GATE_OPTIONS)} "
                          f"can be changed (other maps: --encoder_path, --decoder_path without --run)")
    art.options = dataclasses.replace(art.options, **{n: getattr(cfg, n) for n in GATE_OPTIONS if n in given})
    art.options.validate_intervention()
    return art


def run(cfg: AskConfig, given: Sequence[str] = ()) -> int:
    """`given`: the option names given on the command line (they override an artefact's gate)."""
    questions = read_questions(cfg)
    art, where = load_source(cfg)
    if where.endswith(ARTEFACT):
        art = with_gate_options(art, cfg, given)
    if cfg.chpt_dir == AskConfig.__dataclass_fields__["chpt_dir"].default and art.checkpoint:
        cfg.chpt_dir = art.checkpoint  # an artefact alone: the model it was made on, unless given
    cfg.chpt_dir = str(located(cfg.chpt_dir))
    llama = build_llama(cfg, max_batch_size=min(cfg.eval_batch_size, len(questions)),
                        say=lambda line: print(line, file=sys.stderr))  # stdout stays the answers (--json)
    note = check_model(art.model, model_info_of(llama), where, allow_other_weights=cfg.allow_other_weights)
    if note:
        print(note, file=sys.stderr)
    answers = ask(llama, art, questions, examples_type=cfg.examples_type, max_new_tokens=cfg.max_new_tokens,
                  batch_size=cfg.eval_batch_size)
    for a in answers:
        print(json.dumps(a) if cfg.json else "\n".join(answer_lines(a)) + "\n")
    return 0


# ----------------------------------------------------------------------------- export