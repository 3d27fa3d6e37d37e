"""Where each stage reads and writes, derived from the run name and one root folder."""
from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from neurosymbolic_llm.pipeline.errors import ConfigError, echo

_CHECKOUT_PROGRAMS = Path(__file__).resolve().parents[3] / "Programs"  # src/neurosymbolic_llm/pipeline -> repo
# The root of models/, results/, gathered_data_*/ and data/: the checkout's Programs folder (the
# original code's layout) when the package runs from a checkout, else the working directory (an
# installed wheel).
PROGRAMS_DIR = _CHECKOUT_PROGRAMS if _CHECKOUT_PROGRAMS.is_dir() else Path.cwd()


# A run name becomes part of folder and file names (results/<run>/, gathered_data_<run>/,
# encoders_<run>.pth): a plain name only, so that no name can lead outside its folder or onto
# another run's (or model's) files.
RUN_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,200}")


def check_run_name(name: str, what: str = "run name") -> str:
    """`name` if it is a plain run name (letters, digits, '.', '_', '-'; not '.' or '..'), else a
    ConfigError naming `what`; the one rule of every stage and of compare_runs."""
    if not RUN_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"{what}: {echo(name)} is not a plain run name (use 1-200 letters, digits, '.', "
                          f"'_' or '-', not '.' or '..'); nothing was written")
    return name


def run_name_or_today(run_name: str) -> str:
    return check_run_name(run_name) if run_name else _dt.date.today().strftime("%Y_%m_%d")


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


def decoder_output_path(cfg, run: str) -> Path:
    """Where stage 3 of `run` writes its fine-tuned decoder: beside --decoder_path."""
    src = Path(cfg.decoder_path).expanduser()
    return src.with_name(f"{src.stem}_post_fine_tuning_{run}.pth")
