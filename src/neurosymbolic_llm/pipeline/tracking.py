"""The run record: always-on local files, plus Weights & Biases when asked for.

Each stage of a run (run name R) writes, in `results/R/`:
- `config_<stage>.yaml`: the stage's resolved options, plus a `run_record` mapping (stage, run,
  attempt, label, and what the stage used instead of its options, see `Tracker.record_used`).
  Values the stage took from elsewhere replace the options' values, so the file fed back with
  `--config` describes what ran; `run_record` is a mapping, so `--config` skips it.
- `metrics.jsonl` (appended, shared by the stages): one JSON object per record, each with `time`,
  `run`, `stage`, `attempt` (this process's id: `<start time>-<pid>`; a resumed or repeated run
  is a new attempt, so a dead attempt's lines can be told apart) and `step` when there is one.
  Records of a kind other than metrics carry `kind`: "summary", "table" (a CSV written beside it),
  "image" (a PNG written beside it).

With `log_wandb` the same metrics go to wandb (numbers only: strings and lists stay local), tables
as `wandb.Table`, images as `wandb.Image`, summaries as the run summary. Every stage of one run
name is its own wandb run in the group R (or `--wandb_group`) with the stage as job type, all in
one project, so the project page shows one line per experiment. wandb runs online when an API key is configured,
offline otherwise (upload later with `wandb sync`); `WANDB_MODE=disabled` turns it off whatever
the flag says. Stages: gather (1), encoders (2), fine_tune (3; its label names the methods),
compare (compare_runs.py).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from neurosymbolic_llm.pipeline.files import atomic_write_text
from neurosymbolic_llm.pipeline.options import to_dict

STAGES = ("gather", "encoders", "fine_tune", "compare")
DEFAULT_PROJECT = "Symbolic LLM"  # one project for every stage: a run name's stages form one group


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _number(value: Any) -> Optional[float | int]:
    """`value` as a wandb metric (int or float), None when it is no number (a string, a list)."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    return value if isinstance(value, (int, float)) else None


def numbers(metrics: dict[str, Any]) -> dict[str, float | int]:
    """The numeric entries of `metrics`: what goes to wandb as metrics or summary."""
    out = {k: _number(v) for k, v in metrics.items()}
    return {k: v for k, v in out.items() if v is not None}


def _wandb_mode() -> str:
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    if os.environ.get("WANDB_API_KEY") or netrc.is_file() and "api.wandb.ai" in netrc.read_text():
        return "online"
    return "offline"


def attempt_id() -> str:
    """This process's attempt: start time and pid (unique on one machine)."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"


class Tracker:
    """The record of one stage of one run: `<run_dir>/config_<stage>.yaml`, lines of
    `<run_dir>/metrics.jsonl`, and optionally one wandb run (group = run name, job type = stage).

    Only the process with `enabled=True` (rank 0 under torchrun) writes anything. `label` tells
    apart stage runs of one run name in wandb (stage 3: its methods, e.g. "baseline+neurosymbolic");
    `group` is the wandb group (default: the run name).
    """

    def __init__(self, run_dir: Path, *, stage: str, run_name: str, config: Any, log_wandb: bool = False,
                 enabled: bool = True, project: str = "", group: str = "", label: str = ""):
        if stage not in STAGES:
            raise ValueError(f"stage {stage!r} is not one of {STAGES}")
        self.run_dir, self.stage, self.run_name, self.label = Path(run_dir), stage, run_name, label
        self.enabled = enabled
        self.attempt = attempt_id()
        self._options = dict(config) if isinstance(config, dict) else to_dict(config) if config is not None else {}
        self._used: dict[str, Any] = {}
        self._wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._metrics = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        if log_wandb and _wandb_mode() != "disabled":
            import wandb

            name = f"{run_name} {stage}" + (f" ({label})" if label else "")
            self._wandb = wandb.init(project=project or DEFAULT_PROJECT, name=name, group=group or run_name,
                                     job_type=stage, config={**self._options, "run_record": self._record()},
                                     mode=_wandb_mode(), dir=str(self.run_dir))
            # charts of step-wise metrics use the logged `step`, not wandb's call counter; the
            # summary holds what `summary` sets, not the last logged values
            self._wandb.define_metric("step", summary="none")
            self._wandb.define_metric("*", step_metric="step", step_sync=True, summary="none")

    # ------------------------------------------------------------------ config
    @property
    def config_path(self) -> Path:
        return self.run_dir / f"config_{self.stage}.yaml"

    def _record(self) -> dict[str, Any]:
        rec = {"stage": self.stage, "run": self.run_name, "attempt": self.attempt}
        if self.label:
            rec["label"] = self.label
        if self._used:
            rec["used"] = self._used
        return rec

    def _write_config(self) -> None:
        data = {**self._options, "run_record": self._record()}
        atomic_write_text(self.config_path, yaml.safe_dump(_jsonable(data), sort_keys=False))

    def record_used(self, values: dict[str, Any], source: str) -> None:
        """Record what the stage used instead of its options (stage 3: the VSA engine of the map
        file). Option names among `values` replace the options' values in config_<stage>.yaml;
        every value is listed under run_record.used[source]; wandb's config is updated."""
        if not self.enabled:
            return
        values = _jsonable(dict(values))
        self._used[source] = values
        self._options.update({k: v for k, v in values.items() if k in self._options})
        self._write_config()
        if self._wandb is not None:
            self._wandb.config.update({**{k: v for k, v in values.items() if k in self._options},
                                       "run_record": self._record()}, allow_val_change=True)

    # ------------------------------------------------------------------ records
    def _write(self, record: dict[str, Any]) -> None:
        head = {"time": round(time.time(), 3), "run": self.run_name, "stage": self.stage, "attempt": self.attempt}
        self._metrics.write(json.dumps({**head, **_jsonable(record)}) + "\n")

    def log(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        """One metrics record; wandb gets its numbers (and `step`, its charts' x axis)."""
        if not self.enabled:
            return
        self._write({**({"step": step} if step is not None else {}), **metrics})
        if self._wandb is not None:
            nums = numbers(metrics)
            if nums:
                self._wandb.log({**nums, **({"step": step} if step is not None else {})})

    def summary(self, values: dict[str, Any]) -> None:
        """The stage's headline figures: a local record of kind "summary"; wandb's run summary
        (numbers only) instead of the last logged values."""
        if not self.enabled:
            return
        self._write({"kind": "summary", **values})
        if self._wandb is not None:
            self._wandb.summary.update(numbers(values))

    def table(self, name: str, df, file: Optional[Path] = None) -> None:
        """A pandas DataFrame as a wandb.Table; locally a record of kind "table" naming `file`
        (the CSV the stage wrote) and the row count."""
        if not self.enabled:
            return
        self._write({"kind": "table", "name": name, "rows": len(df), **({"file": str(file)} if file else {})})
        if self._wandb is not None:
            import wandb

            df = df.reset_index(drop=True).astype(object)
            self._wandb.log({name: wandb.Table(dataframe=df.where(df.notna(), None))})  # pd.NA: no wandb type

    def line_plot(self, name: str, x: Sequence, ys: dict[str, Sequence], *, xname: str, title: str) -> None:
        """A wandb line plot of several series against one x (wandb only: the PNG is the local one)."""
        if not self.enabled or self._wandb is None:
            return
        import wandb

        self._wandb.log({name: wandb.plot.line_series(xs=list(x), ys=[list(v) for v in ys.values()],
                                                      keys=list(ys), title=title, xname=xname)})

    def image(self, name: str, path: Path) -> None:
        """A saved plot (PNG): a local record of kind "image"; uploaded to wandb when wandb is on."""
        if not self.enabled:
            return
        self._write({"kind": "image", "name": name, "file": str(path)})
        if self._wandb is not None:
            import wandb

            self._wandb.log({name: wandb.Image(str(path))})

    def finish(self) -> None:
        if not self.enabled:
            return
        self._metrics.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
