"""Where each stage reads and writes, derived from the run name (never from the working directory)."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

PROGRAMS_DIR = Path(__file__).resolve().parents[1]


def run_name_or_today(run_name: str) -> str:
    return run_name or _dt.date.today().strftime("%Y_%m_%d")


def programs_root(programs_dir: str = "") -> Path:
    """Root of models/, results/ and gathered_data_*/: --programs_dir, else the Programs folder."""
    return Path(programs_dir).expanduser().resolve() if programs_dir else PROGRAMS_DIR


def models_dir(programs_dir: str = "") -> Path:
    return programs_root(programs_dir) / "models"


def results_dir(run_name: str, programs_dir: str = "") -> Path:
    return programs_root(programs_dir) / "results" / run_name


def gathered_data_dir(run_name: str, programs_dir: str = "") -> Path:
    return programs_root(programs_dir) / f"gathered_data_{run_name}"
