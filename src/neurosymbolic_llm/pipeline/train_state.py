"""Stage 3's resumable training state: one file per run, written atomically every N optimizer steps,
at the end of training and on Ctrl-C/SIGTERM, and read back when the same run is started again.

The file (`Programs/results/<run>/training_state.pt`, one `torch.save` of plain tensors and
numbers, read with `weights_only=True`) holds everything the next step depends on:

    {"format": "nsllm-training-state", "version": 1, "identity": {...}, "method": name,
     "step": optimizer steps done, "epoch": e, "step_in_epoch": next step of epoch e,
     "order": [N] long (data order of epoch e), "validated": [epochs validated],
     "params": [tensors, in Method.params order], "optimizer": Adam state_dict,
     "scheduler": LambdaLR state_dict, "rng": {torch, cuda, numpy, python}, "log": [per-step records]}

`identity` is what the saved state is only valid for (the options that change training, the
fingerprints of the model, the map files and the training rows). A rerun with other values is
refused by name (`--restart 1` starts over instead), so a state is never continued with other
data or settings. Resuming restores parameters, optimizer, schedule, data order and random states
exactly, so a resumed run ends with the same parameters as one that was never stopped.

Signals: during training Ctrl-C and SIGTERM only raise a flag (`deferred_interrupts`); the loop
finishes its optimizer step, saves the state and ends with one line saying where it is. A second
Ctrl-C stops at once (the last saved state is kept).
"""
from __future__ import annotations

import contextlib
import random
import signal
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from neurosymbolic_llm.pipeline.errors import ConfigError, DataError, Terminated
from neurosymbolic_llm.pipeline.files import atomic_torch_save
from neurosymbolic_llm.pipeline.finite import DIVERGED, require_finite

FORMAT = "nsllm-training-state"
VERSION = 1
FILE_NAME = "training_state.pt"


def rng_state() -> dict[str, Any]:
    """Random states of torch (CPU and CUDA), numpy's global generator and Python's `random`."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    out = {"torch": torch.get_rng_state(),
           "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                     "has_gauss": int(has_gauss), "gauss": float(gauss)},
           "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _differences(saved: dict, now: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} there, {b!r} now")
    return out


class TrainingState:
    """The state file of one run: `load()` checks and returns it (or None), `save()` writes it.

    `enabled` is False on every rank but 0 under torchrun (rank 0 writes; every rank reads, the
    programs folder is shared). `restart` ignores (and on the first save replaces) an existing file."""

    def __init__(self, path: Path, identity: dict, *, every: int, restart: bool = False, enabled: bool = True):
        self.path = Path(path)
        self.identity = identity
        self.every = int(every)
        self.restart = restart
        self.enabled = enabled

    def load(self) -> Optional[dict]:
        """The saved state (read once, then kept), None without one or with `restart`."""
        if not hasattr(self, "_loaded"):
            self._loaded = self._read()
        return self._loaded

    def _read(self) -> Optional[dict]:
        if self.restart or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - an unreadable state is the user's to remove
            first = str(exc).split(". ")[0]  # torch's own advice that follows is about its checkpoints
            raise DataError(f"{self.path}: not a readable training state ({type(exc).__name__}: {first}); "
                            f"rerun with --restart 1 to start over") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION \
                or not isinstance(state.get("identity"), dict) or not isinstance(state.get("params"), list) \
                or not all(torch.is_tensor(p) for p in state["params"]):
            raise DataError(f"{self.path}: not a training state of version {VERSION}; "
                            f"rerun with --restart 1 to start over")
        require_finite(self.named_params(state), f"{self.path}", "rerun with --restart 1 to start over")
        diff = _differences(state["identity"], self.identity)
        if diff:
            raise ConfigError(f"{self.path}: the saved training state of this run was made with other "
                              f"settings ({'; '.join(diff[:3])}{'; ...' if len(diff) > 3 else ''}); rerun with "
                              f"--restart 1 to start over, or use another --run_name")
        return state

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    @staticmethod
    def named_params(state: dict) -> dict[str, torch.Tensor]:
        return {f"trained parameter {i} ({state.get('method')})": p for i, p in enumerate(state["params"])}

    def save(self, state: dict) -> Path:
        """Write `state` (atomic; rank 0). Parameters that are not all finite are never written: the
        previous state stays, and the error says so."""
        kept = f"the last good state in {self.path} is kept" if self.path.is_file() else "no state was saved"
        require_finite(self.named_params(state), f"stage 3 after step {state.get('step')}",
                       f"{kept}; {DIVERGED} (--learning_rate), and rerun with --restart 1")
        if self.enabled:
            atomic_torch_save({"format": FORMAT, "version": VERSION, "identity": self.identity, **state},
                              self.path, what="the stage-3 training state")
        return self.path


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[list[int]]:
    """Within the block, the first Ctrl-C or SIGTERM is recorded in the yielded list instead of
    raised (the caller checks it between optimizer steps); a second one raises at once. Outside
    the main thread (a test calling the library) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    pending: list[int] = []

    def handler(signum, frame):
        if pending:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        pending.append(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield pending
    finally:
        for s, h in old.items():
            signal.signal(s, h)
