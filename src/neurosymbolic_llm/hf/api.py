"""``Intervention``: a trained intervention artefact (pipeline/artefact.py) on a stock transformers model.

    iv = Intervention.from_pretrained("results/real_ns/intervention")
    messages = iv.prompt("What is 12 times 7 mod 1000?")        # the chat it was trained with
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    with iv.apply(model):                                        # hooks on, checked first
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
    iv.last_report                                               # per row: type, x, y, gate, answer

``check(model)`` refuses, in one line, a model of another architecture, layer count or dimension, or
other weights (the project's content fingerprint of the model's own parameters, which equals that
of the same weights in Meta, Hugging Face or GGUF form); ``allow_other_weights=True`` is the
project's --allow_other_weights. Modes: "write" (the intervention), "read" (only the reading and
its report), "off" (nothing attached, nothing checked). The hooks: neurosymbolic_llm/hf/hooks.py.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Optional

from neurosymbolic_llm.hf.hooks import Attachment
from neurosymbolic_llm.hf.weights import model_args, model_info_of
from neurosymbolic_llm.pipeline import artefact as artefacts
from neurosymbolic_llm.pipeline.errors import ConfigError, EngineMismatchError
from neurosymbolic_llm.pipeline.gate import Gate
from neurosymbolic_llm.pipeline.intervention import SymbolicIntervention
from neurosymbolic_llm.pipeline.maps import check_model
from neurosymbolic_llm.pipeline.ask_prompt import dialog
from neurosymbolic_llm.symbolic.solver import solve

MODES = ("write", "read", "off")


class _Detached:
    """The handle of mode "off": nothing to remove."""
    attached = False

    def remove(self) -> None:
        pass


class Intervention:
    """A trained intervention (artefacts.TrainedIntervention) for transformers models."""

    def __init__(self, artefact: artefacts.TrainedIntervention, *, source: str = "",
                 allow_other_weights: bool = False):
        self.artefact, self.source, self.allow_other_weights = artefact, source or "the intervention", allow_other_weights
        self._records: Optional[dict] = None
        self._written = False
        self._warned = False

    # ------------------------------------------------------------------ files
    @classmethod
    def from_pretrained(cls, folder: str | Path, *, allow_other_weights: bool = False) -> "Intervention":
        """Read an artefact folder (intervention.json + intervention.safetensors)."""
        return cls(artefacts.load_intervention(folder), source=f"{Path(folder).expanduser()} (intervention)",
                   allow_other_weights=allow_other_weights)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the artefact folder (CPU tensors; loads back bit for bit)."""
        return artefacts.save_intervention(folder, self.artefact)

    # ------------------------------------------------------------------ the model
    def check(self, model, *, allow_other_weights: Optional[bool] = None) -> str:
        """Empty when `model` is the model the intervention was made on; a note (also warned) when only
        its weights differ and other weights are allowed; otherwise EngineMismatchError (one line)."""
        allow = self.allow_other_weights if allow_other_weights is None else allow_other_weights
        args = model_args(model)
        try:
            self.artefact.options.validate_layers(args.n_layers)
        except ConfigError as exc:
            raise EngineMismatchError(f"{self.source}: {exc}") from None
        note = check_model(self.artefact.model, model_info_of(model), self.source, allow_other_weights=allow)
        if note:
            warnings.warn(note, stacklevel=2)
        return note

    def prompt(self, question: str, index: int = 0, examples_type: str = "auto") -> list[dict]:
        """The chat messages the intervention was trained with for `question` (nsllm ask's: two solved
        examples of the question's type from row_rng(seed, "ask", index); a question in no known
        phrasing as the gate statistics ask non-math questions). Feed them to the model's chat template."""
        return dialog(question, index, self.artefact, examples_type)[0]

    def attach(self, model, mode: str = "write", *, allow_other_weights: Optional[bool] = None):
        """Check `model`, then hook the intervention on it until ``handle.remove()``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "off":
            return _Detached()
        self.check(model, allow_other_weights=allow_other_weights)
        art, args = self.artefact, model_args(model)
        device = next(model.parameters()).device
        iv = SymbolicIntervention(art.engine, art.encoder, art.decoders, art.options,
                                  complexity=art.prompt["complexity"],
                                  limit_solution_digits=art.prompt["limit_solution_digits"],
                                  norm_eps=args.norm_eps).to(device)
        iv.load_merge_state(art.merge_state)
        iv.requires_grad_(False)
        return Attachment(iv, model, write=mode == "write", on_prompt=self._on_prompt(mode == "write"))

    @contextlib.contextmanager
    def apply(self, model, mode: str = "write", *, allow_other_weights: Optional[bool] = None):
        """``with iv.apply(model):`` the hooks for the block, removed on exit (also by an exception)."""
        handle = self.attach(model, mode, allow_other_weights=allow_other_weights)
        try:
            yield handle
        finally:
            handle.remove()

    # ------------------------------------------------------------------ what it did
    def _on_prompt(self, written: bool):
        def record(records: dict, gate_any: bool) -> None:
            self._records, self._written = records, written
            if not gate_any and not self._warned:
                self._warned = True
                bounds = Gate.of(self.artefact.options).describe()
                scores = records["score"].float()
                warnings.warn(f"{self.source}: the gate stayed shut for all {len(scores)} rows (scores "
                              f"{float(scores.min()):.3f}..{float(scores.max()):.3f}; it opens when {bounds}): "
                              f"it acts only inside the prompt it was trained with, iv.prompt(question) gives "
                              f"those chat messages (warned once)", stacklevel=2)
        return record

    @property
    def last_report(self) -> list[dict]:
        """Per row of the last prompt: decoded type (and every type's score), operands x and y, the
        gate's score and decision, the symbolic answer, and whether it was written."""
        if self._records is None:
            return []
        rec = {k: v.detach().cpu() for k, v in self._records.items()}
        engine, p = self.artefact.engine, self.artefact.prompt
        names = list(engine.possible_problems)
        answers = solve(rec["type_id"], rec["x"], rec["y"], problem_list=names, complexity=p["complexity"],
                        limit_solution_digits=p["limit_solution_digits"])
        type_scores = engine.problem_type_scores(rec["vsa"].to(engine.device)).cpu()  # [B,T]
        return [{"type": names[int(rec["type_id"][i])], "x": int(rec["x"][i]), "y": int(rec["y"][i]),
                 "score": float(rec["score"][i]), "gate": bool(rec["gate"][i]), "answer": int(answers[i]),
                 "written": self._written and bool(rec["gate"][i]),
                 "type_scores": {n: float(type_scores[i, j]) for j, n in enumerate(names)}}
                for i in range(len(answers))]
