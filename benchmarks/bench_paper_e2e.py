"""The paper's whole run on one GPU, end to end, on random 8B-shaped weights: how long each stage
takes and how close it comes to the card's limit (the numbers the model produces are meaningless,
the time is not; the original needed about two hours on one H100).

    python benchmarks/bench_paper_e2e.py                  # one CUDA GPU (~25 GB of disk in --work)
    python benchmarks/bench_paper_e2e.py --tiny           # same code on the CPU, tiny model, ~1 minute
    python benchmarks/bench_paper_e2e.py --train_sweep    # stage-3 step time and MFU per batch choice

Every stage runs through the entry scripts' real command lines, with configs/paper.yaml:
CSV splits of 20,000 + 200 + 2,000 generated questions (demo/make_demo_data.py); stage 1 (gather every
layer's last-token state); stage 2 (encoders and decoders of every layer, as the paper trained
them); stage 3: the neurosymbolic decoder (2,500 steps of 8 questions) evaluated with the plain
model, the adapter (the paper's "LoRA" row) and LoRA trained the same way, and chain of thought
(1,000-token budget), each evaluated on all 2,000 test questions; then compare_runs.py. Before the
stages the script measures the card: bf16 and float32 matmul peaks and memory bandwidth. The
random checkpoint (Meta layout) is written once into --work and reused.

Per stage it prints the wall time and the card's limit: the least time the stage's work needs on
this card, from a work model of it (below), and their ratio (the stage's share of the limit).
Work model: a forward costs 2 FLOPs per weight and token (blocks; the output head only where logits
are taken), frozen weights need only input gradients (2 more per weight and token, for the blocks
the gradient passes), a decode step is bound by reading every weight and the cached K/V once or
by its matmul FLOPs, whichever takes longer; stage 2 is float32 matmuls. Only real tokens count
(no padding); generated lengths come from each run's responses.csv, prompts from the pipeline's own
prompt builder. Model loading and Python start-up count in the wall time, not in the limit.

Options: --scale F runs F x the paper's rows and steps (shorter GPU sessions); --decode eager times
the previous decoding (NSLLM_DECODE for the runs); --lanes N runs the stage-3 runs N at a time.
--train_sweep (instead of the run) times the stage-3 step in this process for every split of the
paper's 8 samples per step into micro-batches (gradient accumulation) with the prefix split on and
off, and prints each one's MFU: the measurement that chooses the preset's n_samples,
inference_to_backprop_ratio and prefix_split.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROGRAMS = ROOT / "Programs"

import pandas as pd
import torch
from card import (LLAMA_31_8B, kv_bytes_per_token, matmul_peak, memory_bandwidth, random_model, weight_counts,
                  write_random_checkpoint)

PAPER = dict(n_train=20000, n_val=200, n_test=2000)
TINY = dict(dim=64, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=128256, multiple_of=32, norm_eps=1e-5,
            rope_theta=500000.0, use_scaled_rope=True)
RUN = "e2e"
# The stage-3 runs: (run name, options), in the order the paper's Table 1 lists them.
STAGE3 = [(f"{RUN}_ns", ["--test_baseline", "1"]), (f"{RUN}_adapter", ["--adapter_baseline", "1"]),
          (f"{RUN}_lora", ["--lora_baseline", "1"]), (f"{RUN}_cot", ["--cot", "1"])]


def script(name: str) -> Path:
    """An entry script's path (command lines as in README.md and Programs/demo/README.md)."""
    return PROGRAMS / name


# ----------------------------------------------------------------------------- the card
@dataclass
class Card:
    peak: float       # matmul FLOP/s in the model's dtype
    peak32: float     # float32 matmul FLOP/s (stage 2 trains in float32)
    bandwidth: float  # memory bytes/s


def measure_card(device: str, dtype: torch.dtype) -> Card:
    reps = 10 if device == "cuda" else 3
    card = Card(matmul_peak(device, dtype, repeats=reps), matmul_peak(device, torch.float32, repeats=reps),
                memory_bandwidth(device, repeats=reps))
    if device == "cuda":
        torch.cuda.empty_cache()  # the runs need the memory
    return card


@dataclass
class Shape:
    body: int      # weights of the blocks
    head: int      # weights of the output head
    n_layers: int
    dim: int
    element: int   # bytes per weight
    kv: int        # bytes of cached K/V per token

    @classmethod
    def of(cls, params: dict, element: int) -> "Shape":
        body, head = weight_counts(params)
        return cls(body, head, params["n_layers"], params["dim"], element, kv_bytes_per_token(params, element))


# ----------------------------------------------------------------------------- work model
def forward_s(card: Card, m: Shape, tokens: int, head_tokens: int, layers: float = 1.0) -> float:
    """Least time of a forward over `tokens` (a fraction `layers` of the blocks) with logits at `head_tokens`."""
    return 2 * (m.body * layers * tokens + m.head * head_tokens) / card.peak


def generate_s(card: Card, m: Shape, prompts: list[int], generated: list[int], budget: int, batch: int) -> float:
    """Least time of batched greedy generation: prefill, then steps bound by reading the weights
    and the cache, or by their FLOPs. prompts/generated: tokens per row (generated incl. the stop)."""
    t = 0.0
    weights = (m.body + m.head) * m.element
    for b0 in range(0, len(prompts), batch):
        P, G = prompts[b0:b0 + batch], generated[b0:b0 + batch]
        B, S = len(P), max(P)
        t += forward_s(card, m, sum(P), B)
        for i in range(min(budget, max(G)) - 1):
            t += max((weights + B * (S + i) * m.kv) / card.bandwidth, 2 * (m.body + m.head) * B / card.peak)
    return t


def train_s(card: Card, m: Shape, prompts: list[int], answers: list[int], *, every_position: bool,
            layer: int) -> float:
    """Least time of training over these samples (answers incl. <|eot_id|>): a forward over all
    tokens, then input gradients from the output back to the written layer for the last prompt
    token and the answer (the intervention, the adapter), or through every block and position
    (`every_position`: LoRA)."""
    fwd = forward_s(card, m, sum(prompts) + sum(answers), sum(answers))
    if every_position:
        bwd = forward_s(card, m, sum(prompts) + sum(answers), sum(answers))
    else:
        bwd = forward_s(card, m, sum(answers) + len(answers), sum(answers), layers=(m.n_layers - layer) / m.n_layers)
    return fwd + bwd


def stage2_s(card: Card, m: Shape, metrics: dict, n_train: int, n_val: int, vsa_dim: int) -> float:
    """Float32 matmuls of stage 2: per encoder epoch forward + weight gradient on the training rows
    and a forward on the validation rows; a decoder epoch also maps through the encoder first."""
    L = m.n_layers + 1
    mm = 2 * L * m.dim * vsa_dim  # FLOPs of one row through one batched map
    enc = metrics.get("encoder_epochs_run", 0) * mm * (2 * n_train + n_val)
    dec = metrics.get("decoder_epochs_run", 0) * mm * (3 * n_train + 2 * n_val)
    return (enc + dec) / card.peak32


# ----------------------------------------------------------------------------- running
@dataclass
class Run:
    name: str
    argv: list[str]
    wall: float = 0.0
    limit: float = 0.0


def run_all(runs: list[Run], lanes: int, env: dict, logs: Path) -> float:
    """Run at most `lanes` at a time; each run's wall time is kept; returns the group's wall time."""
    t0, pending, active = time.perf_counter(), list(runs), {}
    while pending or active:
        while pending and len(active) < lanes:
            run = pending.pop(0)
            log = open(logs / f"{run.name}.log", "w")
            print(f"  start {run.name}: {' '.join(run.argv[1:])}", flush=True)
            proc = subprocess.Popen(run.argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            active[run.name] = (run, proc, log, time.perf_counter())
        time.sleep(0.05)
        for name, (run, proc, log, started) in list(active.items()):
            if proc.poll() is None:
                continue
            run.wall = time.perf_counter() - started
            log.close()
            del active[name]
            if proc.returncode != 0:
                for _, other, _, _ in active.values():
                    other.kill()
                tail = (logs / f"{name}.log").read_text().splitlines()[-15:]
                raise SystemExit(f"bench_paper_e2e: {name} failed (exit {proc.returncode}); end of its log:\n"
                                 + "\n".join(tail))
            print(f"  done  {name}: {run.wall:.1f} s", flush=True)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- token counts
def examples(ckpt: Path, data: Path) -> dict:
    """Token counts of every prompt and answer the runs see (the pipeline's prompt builder)."""
    from neurosymbolic_llm.llama.tokenizer import ChatFormat, Tokenizer
    from neurosymbolic_llm.pipeline.training import build_examples

    tok = Tokenizer(ckpt / "tokenizer.model")
    fmt = ChatFormat(tok)
    problems = ["addition", "multiplication", "division", "modulo", "gcd", "lcm", "square_mod",
                "bitwise_and", "bitwise_xor", "bitwise_or"]
    kw = dict(seed=42, complexity=2, limit_solution_digits=True, problem_list=problems)
    out = {"tokenizer": tok}
    for split in ("train", "val", "test"):
        rows = pd.read_csv(data / f"{split}.csv")
        ex = build_examples(rows, fmt, split, **kw)
        out[split] = ([len(p) for p in ex.prompts], [len(a) for a in ex.answers])
    cot = build_examples(pd.read_csv(data / "test.csv"), fmt, "test", prompt="cot", **kw)
    out["test_cot"] = [len(p) for p in cot.prompts]
    return out


def generated_lengths(responses: Path, method: str, tok, budget: int) -> list[int]:
    """Tokens each row generated (+1 for the stop token when it stopped before the budget)."""
    df = pd.read_csv(responses, keep_default_na=False)
    texts = df[df["method"] == method]["generated"].astype(str)
    return [min(budget, len(tok.encode(t, bos=False, eos=False)) + 1) for t in texts]


def read_metrics(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        out.update(json.loads(line))
    return out


# ----------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny model on the CPU, small sizes (CI)")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "nsllm_e2e"),
                    help="folder for the checkpoint (kept), data and outputs (rewritten)")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the paper's rows and steps")
    ap.add_argument("--lanes", type=int, default=1, help="stage-3 runs at a time")
    ap.add_argument("--decode", default="", help="NSLLM_DECODE of the runs (auto, eager, static, graph)")
    ap.add_argument("--eval_batch_size", type=int, default=0, help="prompts per evaluation batch (0: 64, tiny 8)")
    ap.add_argument("--train_sweep", action="store_true",
                    help="instead of the run: time stage-3 steps per micro-batch x accumulation x prefix split (MFU)")
    ap.add_argument("--sweep_steps", type=int, default=5, help="timed optimizer steps per choice (--train_sweep)")
    return ap.parse_args(argv)


@dataclass
class Setup:
    device: str
    dtype: torch.dtype
    params: dict
    sizes: dict        # n_train, n_val, n_test
    eval_batch: int
    cot_budget: int
    layer: int         # the intervention's layer
    work: Path

    @classmethod
    def of(cls, opt: argparse.Namespace) -> "Setup":
        if opt.tiny:
            return cls("cpu", torch.float32, TINY, dict(n_train=16, n_val=8, n_test=20),
                       opt.eval_batch_size or 8, 8, 2, Path(opt.work).expanduser().resolve())
        return cls("cuda", torch.bfloat16, LLAMA_31_8B, {k: max(1, round(v * opt.scale)) for k, v in PAPER.items()},
                   opt.eval_batch_size or 64, 1000, 17, Path(opt.work).expanduser().resolve())


def stage_commands(st: Setup, tiny: bool) -> list[tuple[str, list[Run]]]:
    """(title, runs) of every stage: the entry scripts' command lines."""
    work, data, py = st.work, st.work / "data", [sys.executable]
    csvs = ["--training_data_df_path", str(data / "train.csv"), "--val_data_df_path", str(data / "val.csv"),
            "--testing_data_df_path", str(data / "test.csv")]
    common = ["--config", str(PROGRAMS / "configs" / "paper.yaml"), "--chpt_dir", str(work / "ckpt"),
              "--programs_dir", str(work), "--device", st.device, *csvs]
    stage12 = [str(script("train_encoders_and_decoders.py")), *common, "--run_name", RUN]
    stage12 += ["--training_epochs", "2", "--decoding_epochs", "2"] if tiny else []
    stage3 = [str(script("fine_tune_decoders.py")), *common,
              "--encoder_path", str(work / "models" / f"encoders_{RUN}.pth"),
              "--decoder_path", str(work / "models" / f"decoders_{RUN}.pth"),
              "--testing_num_steps", "0", "--eval_batch_size", str(st.eval_batch),
              "--cot_max_new_tokens", str(st.cot_budget)]
    stage3 += ["--symbolic_encoding_layer", str(st.layer), "--symbolic_decoding_layers", str(st.layer)] if tiny else []
    splits = [str(script("demo/make_demo_data.py")), "--out", str(data), "--seed", "42"]
    return [
        ("CSV splits", [Run("data", py + splits + [a for k, v in st.sizes.items() for a in (f"--{k}", str(v))])]),
        ("stage 1: gather", [Run("stage1", py + stage12 + ["--generate_data", "1"])]),
        ("stage 2: encoders/decoders", [Run("stage2", py + stage12 + ["--generate_data", "0"])]),
        ("stage 3 and baselines", [Run(n, py + stage3 + ["--run_name", n, *o]) for n, o in STAGE3]),
        ("table (compare_runs)", [Run("table", py + [str(script("compare_runs.py")), *[n for n, _ in STAGE3],
                                                      "--programs_dir", str(work), "--out", str(work / "results" / RUN)])]),
    ]


def set_limits(runs: dict, st: Setup, card: Card, counts: dict, stage2_metrics: dict) -> None:
    """Each run's least time on this card (its `limit`), from the work model above."""
    m = Shape.of(st.params, torch.finfo(st.dtype).bits // 8)
    tok, results = counts["tokenizer"], st.work / "results"
    (tp, ta), (vp, va), (sp, sa) = counts["train"], counts["val"], counts["test"]
    short = 2 + 5  # complexity + 5 new tokens for a bare answer
    eot = [a + 1 for a in ta]
    val = generate_s(card, m, vp, [short] * len(vp), short, st.eval_batch) + forward_s(card, m, sum(vp) + sum(va), sum(va))

    def test_eval(name: str, method: str, prompts: list[int], budget: int) -> float:
        gen = generated_lengths(results / name / "responses.csv", method, tok, budget)
        ce_prompts = [p + g for p, g in zip(prompts, gen)] if method == "cot" else prompts
        return (generate_s(card, m, prompts, gen, budget, st.eval_batch)
                + forward_s(card, m, sum(ce_prompts) + sum(sa), sum(sa)))

    def train(every_position: bool) -> float:
        return train_s(card, m, tp, eot, every_position=every_position, layer=st.layer) + val

    runs["stage1"].limit = forward_s(card, m, sum(tp) + sum(vp) + sum(sp), 0)
    runs["stage2"].limit = stage2_s(card, m, stage2_metrics, len(tp), len(vp), vsa_dim=2048)
    runs[f"{RUN}_ns"].limit = (train(False) + test_eval(f"{RUN}_ns", "neurosymbolic", sp, short)
                               + test_eval(f"{RUN}_ns", "baseline", sp, short))
    runs[f"{RUN}_adapter"].limit = train(False) + test_eval(f"{RUN}_adapter", "adapter", sp, short)
    runs[f"{RUN}_lora"].limit = train(True) + test_eval(f"{RUN}_lora", "lora", sp, short)
    runs[f"{RUN}_cot"].limit = test_eval(f"{RUN}_cot", "cot", counts["test_cot"], st.cot_budget)


def run(opt: argparse.Namespace) -> dict:
    """Every stage in turn; returns {"walls": {stage title: s}, "runs": {name: Run}, "work": folder}."""
    st = Setup.of(opt)
    work, ckpt, logs = st.work, st.work / "ckpt", st.work / "logs"
    for d in (work / "data", logs, work / "models", work / "results", *work.glob("gathered_data_*")):
        shutil.rmtree(d, ignore_errors=True)
    logs.mkdir(parents=True)
    if opt.tiny:
        torch.set_num_threads(1)
    name = torch.cuda.get_device_name() if st.device == "cuda" else "CPU"
    card = measure_card(st.device, st.dtype)
    print(f"{name}, torch {torch.__version__}: {st.dtype} matmul {card.peak / 1e12:.1f} TFLOP/s, float32 "
          f"{card.peak32 / 1e12:.1f} TFLOP/s, memory {card.bandwidth / 1e9:,.0f} GB/s (measured now)")
    t0 = time.perf_counter()
    if not ((ckpt / "params.json").is_file() and json.loads((ckpt / "params.json").read_text()) == st.params
            and (ckpt / "consolidated.00.pth").is_file()):
        write_random_checkpoint(ckpt, st.params, device=st.device, dtype=st.dtype)
        print(f"random checkpoint written to {ckpt} in {time.perf_counter() - t0:.0f} s")

    env = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    if opt.tiny:
        env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    if opt.decode:
        env["NSLLM_DECODE"] = opt.decode
    stages = stage_commands(st, opt.tiny)
    print(f"sizes {st.sizes}, eval batch {st.eval_batch}, CoT budget {st.cot_budget}, decode "
          f"{opt.decode or os.environ.get('NSLLM_DECODE', 'auto')}, stage-3 lanes {opt.lanes}; logs in {logs}")
    walls, counts = {}, None
    for title, group in stages:
        print(f"== {title}", flush=True)
        walls[title] = run_all(group, opt.lanes, env, logs)
        if counts is None:
            counts = examples(ckpt, work / "data")  # after the CSV splits, outside the timed stages
    runs = {r.name: r for _, group in stages for r in group}
    stage2_metrics = read_metrics(work / "results" / RUN / "metrics.jsonl")
    set_limits(runs, st, card, counts, stage2_metrics)
    report(stages, walls, runs, stage2_metrics)
    return {"walls": walls, "runs": runs, "work": work}


def train_sweep(opt: argparse.Namespace) -> list[dict]:
    """Measurement mode: time neurosymbolic training steps (8B-shaped, in this process) for
    micro-batch x accumulation x prefix-split choices and print each one's MFU, so the preset's
    default can be chosen by measurement. Effective batch 8 is the paper's optimisation (any split
    of it into micro-batches trains the same); larger ones are shown for reference only."""
    from neurosymbolic_llm.llama.generation import Llama
    from neurosymbolic_llm.llama.tokenizer import Tokenizer, default_tokenizer_path
    from neurosymbolic_llm.pipeline import methods, training
    from neurosymbolic_llm.pipeline.configs import InterventionOptions
    from neurosymbolic_llm.symbolic.engine import SymbolicEngine
    from neurosymbolic_llm.symbolic.problems import generate_problems

    st = Setup.of(opt)
    if opt.tiny:
        torch.set_num_threads(1)
    card = measure_card(st.device, st.dtype)
    effective = [8] if opt.tiny else [8, 16, 32]
    model = random_model(st.params, st.device, st.dtype, max_seq_len=1024, max_batch_size=max(effective))
    llama = Llama(model, Tokenizer(default_tokenizer_path()), model.args, torch.device(st.device))
    engine = SymbolicEngine(VSA_dim=2048, max_digits=10).to(st.device)
    g = torch.Generator().manual_seed(0)
    d, v = model.args.dim, engine.VSA_dim
    method = methods.neurosymbolic(
        model, engine, torch.randn(v, d, generator=g) / d ** 0.5, {st.layer: torch.randn(d, v, generator=g) / v ** 0.5},
        InterventionOptions(symbolic_encoding_layer=st.layer, symbolic_decoding_layers=[st.layer],
                            problem_score_threshold=float("-inf")),  # gate open: the decoder is in every step
        lr=1e-3, complexity=2, limit_solution_digits=True)
    steps = opt.sweep_steps
    rows = generate_problems(max(effective) * (steps + 1), ["multiplication", "modulo", "gcd", "lcm", "square_mod",
                             "bitwise_and", "bitwise_xor", "bitwise_or"], complexity=2, seed=0)
    ex = training.build_examples(rows, llama.formatter, "train", seed=0, complexity=2, limit_solution_digits=True,
                                 problem_list=engine.possible_problems)
    m = Shape.of(st.params, torch.finfo(st.dtype).bits // 8)
    print(f"{'effective':>9} {'micro x accum':>13} {'prefix split':>12} {'ms/step':>9} {'samples/s':>9} "
          f"{'MFU':>6} {'peak GiB':>8}")
    results = []
    for eff in effective:
        warm, timed_ex = ex.take(range(eff)), ex.take(range(eff, eff * (steps + 1)))
        useful = train_s(card, m, [len(p) for p in timed_ex.prompts], [len(a) + 1 for a in timed_ex.answers],
                         every_position=False, layer=st.layer) / steps  # least time of one step's work
        for micro in [b for b in (32, 16, 8, 4, 2, 1) if b <= eff and b * 8 >= eff]:
            for split in (True, False):
                fopts = training.FineTuneOptions(n_samples=micro, inference_to_backprop_ratio=eff // micro,
                                                 prefix_split=split, learning_rate=1e-3, lr_decay={})
                training.train(llama, method, warm, fopts, from_csv=True, seed=0)
                if st.device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                training.train(llama, method, timed_ex, fopts, from_csv=True, seed=0)
                if st.device == "cuda":
                    torch.cuda.synchronize()
                step = (time.perf_counter() - t0) / steps
                peak = torch.cuda.max_memory_allocated() / 2 ** 30 if st.device == "cuda" else float("nan")
                r = dict(effective=eff, micro=micro, accum=eff // micro, prefix_split=split, step_s=step,
                         mfu=useful / step, peak_gib=peak)
                results.append(r)
                print(f"{eff:>9} {f'{micro} x {eff // micro}':>13} {'yes' if split else 'no':>12} {step * 1e3:>9.1f} "
                      f"{eff / step:>9.1f} {r['mfu']:>6.1%} {peak:>8.1f}", flush=True)
    best = max((r for r in results if r["effective"] == 8), key=lambda r: r["mfu"])
    print(f"fastest at the paper's 8 samples per step: n_samples {best['micro']}, inference_to_backprop_ratio "
          f"{best['accum']}, prefix_split {str(best['prefix_split']).lower()} ({best['mfu']:.1%} MFU; "
          f"MFU = the step's forward and needed input-gradient FLOPs at the measured {card.peak / 1e12:.1f} "
          f"TFLOP/s over its time)")
    return results


def report(stages, walls: dict, runs: dict, stage2_metrics: dict) -> None:
    print(f"\n{'stage':<44} {'wall s':>9} {'limit s':>9} {'share':>7}")
    for title, rs in stages:
        limit = sum(r.limit for r in rs)
        share = f"{limit / walls[title]:.1%}" if limit else ""
        print(f"{title:<44} {walls[title]:>9.1f} {limit:>9.1f} {share:>7}")
        if len(rs) > 1:
            for r in rs:
                print(f"  {r.name:<42} {r.wall:>9.1f} {r.limit:>9.1f} {r.limit / r.wall:>7.1%}")
    total, limit = sum(walls.values()), sum(r.limit for r in runs.values())
    print(f"{'total':<44} {total:>9.1f} {limit:>9.1f} {limit / total:>7.1%}")
    print(f"total {total / 60:.1f} min (goal: 12 min or less; the original: about 2 h on one H100); "
          f"stage 2 ran {stage2_metrics.get('encoder_epochs_run')} encoder and "
          f"{stage2_metrics.get('decoder_epochs_run')} decoder epochs")


def main(argv=None) -> int:
    opt = parse_args(argv)
    if not opt.tiny and not torch.cuda.is_available():
        print("bench_paper_e2e: no CUDA device here; run it on a machine with a GPU, or use --tiny on a CPU.")
        return 0
    train_sweep(opt) if opt.train_sweep else run(opt)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
