"""What the fault and hostile-input benchmarks share: the environment the entry scripts run in, the
tiny model and maps they run on, and the judging of one case.

The benchmark scripts run as `python benchmarks/X.py` (Python puts a script's own folder first on
its path, so `import harness` finds this file); none edits sys.path and none imports another script.
The entry scripts run the package of --src (default this checkout's src/) through PYTHONPATH.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ROOT / "Programs"
ENV = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT / "src"))
ENV.pop("WORLD_SIZE", None)
TINY = {"dim": 64, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 128256, "multiple_of": 32,
        "ffn_dim_multiplier": None, "norm_eps": 1e-5, "rope_theta": 500000.0, "use_scaled_rope": True}
LINE_LIMIT = 2100


def use_source(src: str | Path) -> None:
    """Run the entry scripts with the package of `src` (an older checkout's src/ gives "before" counts)."""
    ENV["PYTHONPATH"] = str(Path(src).resolve())


def run(cmd: list[str], timeout: float = 900, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """`cmd` as a process; a timeout is returned as rc None with "(hang)" on stderr, not raised."""
    try:
        return subprocess.run(cmd, env=env or ENV, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return subprocess.CompletedProcess(cmd, None, out, f"(hang: still running after {timeout:.0f} s)")


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(PROGRAMS / name), *args]


def work_folder(keep: str, prefix: str) -> Path:
    work = Path(keep or tempfile.mkdtemp(prefix=prefix)).resolve()
    work.mkdir(parents=True, exist_ok=True)
    return work


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else ""


def tree(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (links are not followed)."""
    return {str(p.relative_to(folder)): sha(p) for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and not p.is_symlink()}


def tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A tiny random Llama (Meta layout, the Llama 3 tokenizer) in `folder`."""
    from neurosymbolic_llm.llama.checkpoint import save_checkpoint
    from neurosymbolic_llm.llama.model import ModelArgs, Transformer

    save_checkpoint(Transformer(ModelArgs.from_params(TINY)).init_weights(seed=seed), TINY, folder)
    return folder


# ----------------------------------------------------------------------------- the tiny model, maps and stages
def setup(work: Path) -> tuple[Path, Path]:
    import torch
    from neurosymbolic_llm.llama.checkpoint import checkpoint_fingerprint, save_checkpoint
    from neurosymbolic_llm.llama.model import ModelArgs, Transformer
    from neurosymbolic_llm.pipeline.maps import model_info, save_maps
    from neurosymbolic_llm.symbolic.engine import SymbolicEngine

    ckpt = work / "ckpt"
    save_checkpoint(Transformer(ModelArgs.from_params(TINY)).init_weights(seed=0), TINY, ckpt)
    engine, g = SymbolicEngine(VSA_dim=64, max_digits=4, seed=4), torch.Generator().manual_seed(0)
    info = model_info(checkpoint_fingerprint(ckpt), 64, 4)
    for kind in ("encoder", "decoder"):
        save_maps(work / "maps" / f"{kind}s_m.pth", kind, {2: torch.randn(64, 64, generator=g) / 8},
                  engine.state_dict(), info)
    return ckpt, work / "maps"


def stage3(ckpt: Path, maps: Path, prog: Path, run="R", *extra: str) -> list[str]:
    return [sys.executable, str(PROGRAMS / "fine_tune_decoders.py"), "--run_name", run, "--chpt_dir", str(ckpt),
            "--programs_dir", str(prog), "--encoder_path", str(maps / "encoders_m.pth"),
            "--decoder_path", str(maps / "decoders_m.pth"), "--symbolic_encoding_layer", "2",
            "--symbolic_decoding_layers", "2", "--problem_type", "gcd,modulo", "--testing_problems", "gcd,modulo",
            "--num_steps", "60", "--n_samples", "2", "--validation_rows", "2", "--testing_num_steps", "4",
            "--testing_n_samples", "2", "--eval_batch_size", "2", "--max_seq_len", "512",
            "--problem_score_threshold", "-100", "--checkpoint_every", "5", "--device", "cpu", *extra]


def stage1(ckpt: Path, prog: Path, *extra: str) -> list[str]:
    return [sys.executable, str(PROGRAMS / "gather_hidden_states.py"), "--run_name", "G", "--chpt_dir", str(ckpt),
            "--programs_dir", str(prog), "--train_data_rounds", "400", "--val_data_rounds", "4",
            "--testing_data_rounds", "4", "--VSA_dim", "64", "--max_digits", "4", "--n_samples", "2",
            "--save_frequency", "4", "--device", "cpu", *extra]


# ----------------------------------------------------------------------------- judging
KINDS = ("one line", "accepted", "vague error", "traceback", "hang", "silent wrong", "data loss")


@dataclass
class Outcome:
    cls: int
    case: str
    kind: str    # one of KINDS
    seen: str


def judge(outcomes: list, cls: int, case: str, r: subprocess.CompletedProcess, *, refuse: bool,
          names: str = "", wrong: str = "", loss: str = "") -> Outcome:
    """One case: `refuse` says whether the right answer is a refusal (exit code 2, one "error:" line,
    the last on stderr, naming `names`; any other refusal is a vague error) or a run that works (exit
    code 0). `wrong` (a wrong result
    seen by the caller) and `loss` (what was lost) override; a timeout is a hang."""
    lines = [ln for ln in (r.stderr or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    one = (r.returncode == 2 and "Traceback" not in r.stderr and len(errors) == 1 and lines[-1] == errors[0]
           and len(errors[0]) <= LINE_LIMIT and names in errors[0])
    if loss:
        kind = "data loss"
    elif r.returncode is None:
        kind = "hang"
    elif "Traceback" in (r.stderr or ""):
        kind = "traceback"
    elif wrong:
        kind = "silent wrong"
    elif refuse and r.returncode == 0:
        kind = "silent wrong"
    elif refuse:
        kind = "one line" if one else "vague error"  # refused, but not in one line naming the file at fault
    else:
        kind = "accepted" if r.returncode == 0 else "silent wrong"  # a wrong refusal is as wrong
    seen = lines[-1] if lines else f"(nothing on stderr, rc {r.returncode})"
    seen = (seen if len(seen) <= 240 else f"{seen[:240]}...") + f" (rc {r.returncode})"
    if wrong or loss:
        seen = f"{seen}; {wrong or loss}"
    out = Outcome(cls, case, kind, seen)
    outcomes.append(out)
    print(f"- [{cls}] {case}: {kind}\n    {seen}", flush=True)
    return out


def table(outcomes: list, classes: dict[int, str]) -> str:
    """Markdown: per class, tried and the count of each kind."""
    head = "| class | tried | " + " | ".join(KINDS) + " |\n|---|---|" + "---|" * len(KINDS)
    rows = []
    for cls, what in classes.items():
        mine = [o for o in outcomes if o.cls == cls]
        if mine:
            rows.append(f"| {cls}. {what} | {len(mine)} | " +
                        " | ".join(str(sum(o.kind == k for o in mine)) for k in KINDS) + " |")
    total = f"| all | {len(outcomes)} | " + " | ".join(str(sum(o.kind == k for o in outcomes)) for k in KINDS) + " |"
    return "\n".join([head, *rows, total])


def test_module(name: str):
    """A module of tests/ (one that imports only the package, e.g. tests/surface_fuzz.py), loaded by
    its path: no benchmark edits sys.path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
