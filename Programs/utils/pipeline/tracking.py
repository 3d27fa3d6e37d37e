"""Run tracking: always-on local files, plus Weights & Biases when asked for.

Every run writes, in its results folder, `config.yaml` (the resolved configuration) and
`metrics.jsonl` (one JSON object per `log` call). With `log_wandb`, the same metrics and images also
go to wandb: online when an API key is configured, offline otherwise (upload later with
`wandb sync`). `WANDB_MODE=disabled` (as in the tests) turns wandb off whatever the flag says.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

from utils.pipeline.options import save_config, to_dict


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


def _wandb_mode() -> str:
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY") or (Path.home() / ".netrc").is_file() and "api.wandb.ai" in (Path.home() / ".netrc").read_text():
        return "online"
    return "offline"


class Tracker:
    """Log metrics to `<run_dir>/metrics.jsonl` and, optionally, to wandb.

    Only the process with `enabled=True` (rank 0 under torchrun) writes anything.
    """

    def __init__(self, run_dir: Path, *, project: str, run_name: str, config: Any,
                 log_wandb: bool = False, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, self.run_dir / "config.yaml")
        self._metrics = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        if log_wandb and _wandb_mode() != "disabled":
            import wandb

            self._wandb = wandb.init(project=project, name=run_name, config=to_dict(config),
                                     mode=_wandb_mode(), dir=str(self.run_dir))

    def log(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **({"step": step} if step is not None else {}), **_jsonable(metrics)}
        self._metrics.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def log_image(self, name: str, path: Path) -> None:
        """Record a saved plot (PNG); uploaded to wandb when wandb is on."""
        if not self.enabled:
            return
        self.log({"image": name, "path": str(path)})
        if self._wandb is not None:
            import wandb

            self._wandb.log({name: wandb.Image(str(path))})

    def finish(self) -> None:
        if not self.enabled:
            return
        self._metrics.close()
        if self._wandb is not None:
            self._wandb.finish()
