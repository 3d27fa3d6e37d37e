"""A saved run as the defaults of a command line (nsllm ask and export-intervention, `--run R`):
which saved configuration a run name means, and where its saved relative paths are.

Torch-free: it runs before a command's options are parsed, so --help stays fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import yaml

from neurosymbolic_llm.errors import ConfigError
from neurosymbolic_llm.pipeline.method_table import MAIN_FLAGS
from neurosymbolic_llm.pipeline.paths import check_run_name, programs_root, results_dir

STAGE3_CONFIG, STAGE2_CONFIG = "config_fine_tune.yaml", "config_encoders.yaml"


def _stage3_runs_using(encoder: Path, root: Path, programs_dir: str = "") -> list[str]:
    """Neurosymbolic stage-3 runs whose saved encoder_path is `encoder` (not the diagnostic runs with
    --simulate_perfect_encoder, e.g. make real's real_perfect_encoder)."""
    out = []
    for path in sorted((root / "results").glob(f"*/{STAGE3_CONFIG}")):
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue  # not a readable run record: not a candidate
        others = [*MAIN_FLAGS, "simulate_perfect_encoder"]  # not a neurosymbolic run
        if any(data.get(k) for k in others) or data.get("test_baseline") == 2:
            continue
        if data.get("encoder_path") and located(data["encoder_path"], programs_dir).resolve() == encoder.resolve():
            out.append(path.parent.name)
    return out


def saved_config(run: str, programs_dir: str = "") -> Path:
    """results/<run>/config_fine_tune.yaml, or that of the one neurosymbolic stage-3 run that used the
    maps of the stage-2 run <run>; a one-line error naming what was found otherwise."""
    folder = results_dir(check_run_name(run, "--run"), programs_dir)
    if (folder / STAGE3_CONFIG).is_file():
        return folder / STAGE3_CONFIG
    if not (folder / STAGE2_CONFIG).is_file():
        raise ConfigError(f"--run {run}: {folder} holds no {STAGE3_CONFIG} (a stage-3 run) nor {STAGE2_CONFIG}")
    root = programs_root(programs_dir)
    users = _stage3_runs_using(root / "models" / f"encoders_{run}.pth", root, programs_dir)
    if len(users) != 1:
        found = f"stage-3 runs using its maps: {', '.join(users)}" if users else "no neurosymbolic stage-3 run used its maps"
        raise ConfigError(f"--run {run} is a stage-2 run; {found}: pass one of them as --run, or give "
                          f"--encoder_path, --decoder_path and the layers")
    print(f"--run {run}: using stage-3 run {users[0]}, which used its maps", file=sys.stderr)
    return results_dir(users[0], programs_dir) / STAGE3_CONFIG


def with_run_config(argv: Sequence[str]) -> list[str]:
    """argv with `--config <the run's saved configuration>` first when --run is given without --config."""
    pre = argparse.ArgumentParser(add_help=False)
    for name in ("--run", "--config", "--programs_dir"):
        pre.add_argument(name, default="")
    known, _ = pre.parse_known_args(list(argv))
    if not known.run or known.config:
        return list(argv)
    return ["--config", str(saved_config(known.run, known.programs_dir))] + list(argv)


def located(path: str, programs_dir: str = "") -> Path:
    """A saved relative path. With `programs_dir` (a run's --programs_dir D): from D, else from D's
    parent (the folder holding D, as the repository root holds Programs/), never from the working
    directory, whose files of the same name are another run's. Without: from the working directory,
    else from the repository root (the recipes run there)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    root = programs_root(programs_dir)
    bases = [root, root.parent] if programs_dir else [Path.cwd(), root.parent]
    return next((b / p for b in bases if (b / p).exists()), p if not programs_dir else root / p)
