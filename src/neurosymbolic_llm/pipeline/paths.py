"""Where each stage reads and writes, derived from the run name and one root folder."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

_CHECKOUT_PROGRAMS = Path(__file__).resolve().parents[3] / "Programs"  # src/neurosymbolic_llm/pipeline -> repo
# The root of models/, results/, gathered_data_*/ and data/: the checkout's Programs folder (the
# original code's layout) when the package runs from a checkout, else the working directory (an
# installed wheel).
PROGRAMS_DIR = _CHECKOUT_PROGRAMS if _CHECKOUT_PROGRAMS.is_dir() else Path.cwd()


def run_name_or_today(run_name: str) -> str:
    return run_name or _dt.date.today().strftime("%Y_%m_%d")


def programs_root(programs_dir: str = "") -> Path:
    """Root of models/, results/ and gathered_data_*/: --programs_dir, else PROGRAMS_DIR."""
    return Path(programs_dir).expanduser().resolve() if programs_dir else PROGRAMS_DIR


def models_dir(programs_dir: str = "") -> Path:
    return programs_root(programs_dir) / "models"


def results_dir(run_name: str, programs_dir: str = "") -> Path:
    return programs_root(programs_dir) / "results" / run_name


def gathered_data_dir(run_name: str, programs_dir: str = "") -> Path:
    return programs_root(programs_dir) / f"gathered_data_{run_name}"


def store_dir(cfg) -> Path:
    """Stage 1's output and stage 2's input: --gathered_data_dir, else gathered_data_<run_name>."""
    if cfg.gathered_data_dir:
        return Path(cfg.gathered_data_dir).expanduser().resolve()
    return gathered_data_dir(run_name_or_today(cfg.run_name), cfg.programs_dir)
