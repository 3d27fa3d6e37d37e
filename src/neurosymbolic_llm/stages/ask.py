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
from typing import Iterator, Sequence

import torch

from neurosymbolic_llm.llama.formats import open_checkpoint
from neurosymbolic_llm.llama.identity import tokenizer_digest
from neurosymbolic_llm.pipeline import artefact as artefacts
from neurosymbolic_llm.pipeline.ask_prompt import dialog
from neurosymbolic_llm.pipeline.configs import AskConfig, InterventionOptions
from neurosymbolic_llm.pipeline.errors import ConfigError, DataError, UserError
from neurosymbolic_llm.pipeline.evaluation import answer_token_budget
from neurosymbolic_llm.pipeline.intervention_source import ARTEFACT, load_source
from neurosymbolic_llm.pipeline.maps import check_model, model_info
from neurosymbolic_llm.pipeline.runtime import build_llama
from neurosymbolic_llm.pipeline.saved_runs import located
from neurosymbolic_llm.symbolic.problems import solve_one
from neurosymbolic_llm.symbolic.prompts import parse_answer
from neurosymbolic_llm.symbolic.solver import solve



# ----------------------------------------------------------------------------- asking
def prompt_problem(llama, question: str, number: int, tokens: list[int], n_new: int) -> str:
    """Why question `number` (1-based) cannot be asked whole, or "": its prompt and answer must fit
    --max_seq_len (a prompt that fills it would give no answer, and its reading would be another
    position's)."""
    room = llama.args.max_seq_len
    if len(tokens) + n_new > room:
        return (f"question {number}: its prompt has {len(tokens)} tokens; with {n_new} new tokens that is more "
                f"than --max_seq_len {room}: shorten the question or raise --max_seq_len")
    return ""


@torch.no_grad()
def ask(llama, art: artefacts.TrainedIntervention, questions: Sequence[str], *, examples_type: str = "auto",
        max_new_tokens: int = 0, batch_size: int = 16, first_number: int = 1) -> Iterator[dict]:
    """One dict per question, batch by batch as each is done (see the module docstring;
    `answer_lines` prints one); a question that cannot be asked gives {"number", "question",
    "error"} and the others go on."""
    method = artefacts.build_method(art, llama)
    iv, engine, p = method.intervention, art.engine, art.prompt
    n_new = max_new_tokens or answer_token_budget(llama.tokenizer, p["complexity"], p["limit_solution_digits"])
    names = list(engine.possible_problems)
    for b0 in range(0, len(questions), batch_size):
        batch, asked, prompts, numbers = [], [], [], []
        for i, q in enumerate(questions[b0:b0 + batch_size]):
            number = first_number + b0 + i
            try:
                how = dialog(q, b0 + i, art, examples_type)
            except (ValueError, UserError) as exc:  # e.g. a number of more digits than int() reads
                yield {"number": number, "question": q, "error": f"question {number}: cannot be asked ({exc})"}
                continue
            tokens = llama.formatter.encode_dialog_prompt(how[0])
            problem = prompt_problem(llama, q, number, tokens, n_new)
            if problem:
                yield {"number": number, "question": q, "error": problem}
                continue
            batch.append(q), asked.append(how), prompts.append(tokens), numbers.append(number)
        if not batch:
            continue
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
            yield {
                "number": numbers[i], "question": q, "asked_as": how,
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
            }


def shown(text: str) -> str:
    """`text` with control characters (ANSI escapes, line and paragraph separators) escaped, so a
    question cannot move the cursor, recolour the terminal or fake a line of output."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def strict_json(a: dict) -> str:
    """One answer as strict JSON: a non-finite score is null (JSON has no NaN)."""
    def finite(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return {k: finite(x) for k, x in v.items()} if isinstance(v, dict) else v
    return json.dumps(finite(a), allow_nan=False)


def answer_lines(a: dict) -> list[str]:
    """The text form of one answer of `ask`."""
    g, d = a["gate"], a["decoded"]
    bounds = g["rule"]
    lines = [f"Q: {shown(a['question'])}   [{a['asked_as']}]",
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


MAX_QUESTIONS_BYTES = 64 * 2 ** 20


def read_questions(cfg: AskConfig) -> list[str]:
    """The questions of the command line, then of --questions_file (`-`: standard input): UTF-8 (a
    byte-order mark is dropped), one question per line ("\\n" or "\\r\\n" only: a U+2028 inside a
    question does not split it), blank lines and lines starting with # skipped."""
    questions = list(cfg.questions)
    if cfg.questions_file:
        name = cfg.questions_file
        path = Path(name).expanduser()
        if name != "-" and not path.is_file():
            raise DataError(f"{path}: questions file not found")
        raw = sys.stdin.buffer.read(MAX_QUESTIONS_BYTES + 1) if name == "-" else path.read_bytes()
        where = "standard input" if name == "-" else str(path)
        if len(raw) > MAX_QUESTIONS_BYTES:
            raise DataError(f"{where}: more than {MAX_QUESTIONS_BYTES} bytes of questions")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise DataError(f"{where}: line {line} is not UTF-8 (byte {raw[exc.start]:#04x}); save the file as "
                            f"UTF-8") from None
        questions += [line.strip() for line in text.split("\n")
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


def check_counts(cfg: AskConfig) -> None:
    if cfg.max_new_tokens < 0:
        raise ConfigError(f"--max_new_tokens {cfg.max_new_tokens}: must be >= 0 (0: the pipeline's budget)")
    if cfg.eval_batch_size < 1:
        raise ConfigError(f"--eval_batch_size {cfg.eval_batch_size}: must be at least 1")
    if cfg.max_seq_len < 1:
        raise ConfigError(f"--max_seq_len {cfg.max_seq_len}: must be at least 1")


def check_model_files(cfg: AskConfig, art: artefacts.TrainedIntervention, where: str) -> None:
    """The artefact's or maps' model and tokenizer against --chpt_dir before the model loads (its
    weight samples and tokenizer are read; the weights are not)."""
    ckpt = open_checkpoint(cfg.chpt_dir, cfg.tokenizer_path or None)
    args = ckpt.args()
    info = model_info(ckpt.fingerprint(), args.dim, args.n_layers, ckpt.weight_samples(),
                      tokenizer_digest(ckpt.load_tokenizer()[0]))
    ckpt.close()
    note = check_model(art.model, info, where, allow_other_weights=cfg.allow_other_weights)
    if note:
        print(note, file=sys.stderr)


def run(cfg: AskConfig, given: Sequence[str] = ()) -> int:
    """`given`: the option names given on the command line (they override an artefact's gate).
    Answers are printed as each batch is done; a question that cannot be asked is one "not asked:"
    line on stderr and the others go on (then one error line and exit code 2, naming how many)."""
    check_counts(cfg)
    questions = read_questions(cfg)
    art, where = load_source(cfg)
    if where.endswith(ARTEFACT):
        art = with_gate_options(art, cfg, given)
    if cfg.chpt_dir == AskConfig.__dataclass_fields__["chpt_dir"].default and art.checkpoint:
        cfg.chpt_dir = art.checkpoint  # an artefact alone: the model it was made on, unless given
    cfg.chpt_dir = str(located(cfg.chpt_dir, cfg.programs_dir if cfg.run else ""))
    check_model_files(cfg, art, where)
    llama = build_llama(cfg, max_batch_size=min(cfg.eval_batch_size, len(questions)),
                        say=lambda line: print(line, file=sys.stderr))  # stdout stays the answers (--json)
    failed = []
    for a in ask(llama, art, questions, examples_type=cfg.examples_type, max_new_tokens=cfg.max_new_tokens,
                 batch_size=cfg.eval_batch_size):
        if "error" in a:
            failed.append(a["error"])
            print(f"not asked: {shown(a['error'])}", file=sys.stderr, flush=True)  # the one "error:" line ends the run
            if cfg.json:
                print(strict_json(a), flush=True)
            continue
        print(strict_json(a) if cfg.json else "\n".join(answer_lines(a)) + "\n", flush=True)
    if failed:
        raise DataError(f"{len(failed)} of {len(questions)} questions could not be asked (first: "
                        f"{shown(failed[0])}); the answers of the others are above")
    return 0
