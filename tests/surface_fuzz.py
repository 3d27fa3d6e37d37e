"""Fuzzers of two hostile surfaces (issue 30), shared by tests/test_fuzz_surfaces.py (a short,
reproducible run) and benchmarks/fuzz_surfaces.py (a long one). Imports only the package, so the
benchmark loads it by path.

- The artefact folder: a valid artefact with one damage drawn by the caller's `draw` (Hypothesis):
  a JSON value replaced by a hostile one or deleted or added (by key path), a tensor given a NaN,
  another dtype, another shape, removed or added (the hash kept consistent, as a careful attacker
  would), bytes flipped or the file cut (the hash not updated). `load_intervention` must load it or
  raise one UserError line; a loaded one must hold finite float tensors of the settings' shapes.
- The questions file: random bytes and hostile text (BOMs, separators, control characters, long
  numbers, invalid UTF-8). `read_questions` must read it or raise one UserError line; every question
  read must be turned into a dialog and shown (ask's `dialog`, `shown`) without an exception and
  without a control character left in what is shown.
Outcomes: "loaded"/"read", "error" (one UserError line), or a finding ("other": any other
exception, or an error of several lines or without the file's name).
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import traceback
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from neurosymbolic_llm.errors import UserError
from neurosymbolic_llm.pipeline.artefact import (JSON_NAME, TENSORS_NAME, TrainedIntervention, load_intervention,
                                                 save_intervention)
from neurosymbolic_llm.pipeline.configs import AskConfig, InterventionOptions
from neurosymbolic_llm.pipeline.maps import model_info
from neurosymbolic_llm.symbolic.engine import SymbolicEngine

D, V = 16, 32
HOSTILE = [None, True, False, 0, -1, 1, 2 ** 63, 10 ** 40, -1e308, 1e308, 0.5, "", "false", "1", "x" * 5000,
           [], [1, 2], [-1], {}, {"a": 1}, [[[[]]]]]


def valid_artefact(folder: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    opts = InterventionOptions(symbolic_encoding_layer=1, symbolic_decoding_layers=[1, 3], problem_score_threshold=0.5,
                               problem_score_max=8.0, merge="add_rmsnorm")
    merge = {l: {"skip": torch.tensor(0.5), "norm.weight": torch.randn(D, generator=g)} for l in ("1", "3")}
    art = TrainedIntervention(SymbolicEngine(VSA_dim=V, max_digits=3, seed=9), torch.randn(V, D, generator=g),
                              {1: torch.randn(D, V, generator=g), 3: torch.randn(D, V, generator=g)}, merge, opts,
                              {"complexity": 2, "limit_solution_digits": True, "seed": 5},
                              model_info("f" * 16, D, 4, tokenizer="t" * 64), "", {"run_name": "R"})
    return save_intervention(folder, art)


def _paths(obj, prefix=()):
    """Every key path of a JSON value (dicts only; lists as leaves)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))


def damage_artefact(draw, st, folder: Path) -> str:
    """Damage the artefact in `folder` in one drawn way; returns what was done."""
    jpath, tpath = folder / JSON_NAME, folder / TENSORS_NAME
    data = json.loads(jpath.read_text())
    kind = draw(st.sampled_from(["replace", "delete", "add", "tensor", "flip", "cut"]))
    if kind in ("replace", "delete", "add"):
        path = draw(st.sampled_from(sorted(_paths(data), key=str)))
        parent = data
        for k in path[:-1]:
            parent = parent[k]
        if kind == "replace":
            parent[path[-1]] = draw(st.sampled_from(HOSTILE))
        elif kind == "delete":
            del parent[path[-1]]
        elif isinstance(parent.get(path[-1]), dict):
            parent[path[-1]]["unknown_key"] = draw(st.sampled_from(HOSTILE))
        jpath.write_text(json.dumps(data))
        return f"{kind} {'.'.join(map(str, path))}"
    if kind == "tensor":
        t = load_file(str(tpath))
        name = draw(st.sampled_from(sorted(t)))
        how = draw(st.sampled_from(["nan", "inf", "int", "half", "double", "shape", "remove", "extra", "scalar"]))
        if how in ("nan", "inf"):
            t[name] = t[name].clone()
            t[name].view(-1)[draw(st.integers(0, max(0, t[name].numel() - 1)))] = math.nan if how == "nan" else math.inf
        elif how in ("int", "half", "double"):
            t[name] = t[name].to({"int": torch.int32, "half": torch.float16, "double": torch.float64}[how])
        elif how == "shape":
            t[name] = torch.zeros(*(n + 1 for n in t[name].shape)) if t[name].ndim else torch.zeros(2)
        elif how == "remove":
            del t[name]
        elif how == "extra":
            t[name + ".x"] = torch.zeros(2)
        else:
            t[name] = torch.tensor(1.0)
        if t:
            save_file(t, str(tpath))
            data["tensors_sha256"] = hashlib.sha256(tpath.read_bytes()).hexdigest()
            jpath.write_text(json.dumps(data))
        return f"tensor {name}: {how}"
    target = draw(st.sampled_from([jpath, tpath]))
    raw = bytearray(target.read_bytes())
    if kind == "cut":
        target.write_bytes(bytes(raw[:draw(st.integers(0, len(raw) - 1))]))
        return f"cut {target.name}"
    for _ in range(draw(st.integers(1, 8))):
        raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
    target.write_bytes(bytes(raw))
    return f"flip {target.name}"


def load_outcome(folder: Path) -> tuple[str, str]:
    """("loaded" | "error" | "other", detail) of loading the artefact."""
    try:
        art = load_intervention(folder)
    except UserError as exc:
        msg = str(exc)
        ok = "\n" not in msg and str(folder) in msg and len(msg) < 2100
        return ("error" if ok else "other"), msg[:300]
    except Exception:  # noqa: BLE001 - every other exception is a finding
        return "other", traceback.format_exc(limit=3)[-600:]
    tensors = [art.encoder, art.engine.codebook, *art.decoders.values(),
               *(v for sd in art.merge_state.values() for v in sd.values())]
    if not all(t.is_floating_point() and bool(torch.isfinite(t).all()) for t in tensors):
        return "other", "loaded with a non-finite or non-float tensor"
    return "loaded", ""


# ----------------------------------------------------------------------------- questions
PIECES = ["What is 12 times 7 mod 1000?", "\ufeff", "\u2028", "\u2029", "\x1b[31m", "\r", "\r\n", "\n", "\x00",
          "\x85", "# comment", "   ", "9" * 5000, "What is the GCD of 12 and 8?", "é", "\ud7ff", "🙂", "\t"]


def questions_bytes(draw, st) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    text = "".join(draw(st.lists(st.sampled_from(PIECES) | st.text(max_size=20), max_size=12)))
    raw = text.encode("utf-8", errors="surrogatepass")
    return draw(st.sampled_from([raw, raw + b"\xff", b"\xef\xbb\xbf" + raw, raw.replace(b"\n", b"\r\n")]))


def questions_outcome(path: Path) -> tuple[str, str]:
    """("read" | "error" | "other", detail) of reading the file and preparing and showing its questions."""
    from neurosymbolic_llm.pipeline.ask_prompt import dialog
    from neurosymbolic_llm.stages.ask import read_questions, shown

    art = TrainedIntervention(None, None, {}, {}, InterventionOptions(), {"complexity": 2, "limit_solution_digits": True,
                                                                          "seed": 5}, {})
    try:
        questions = read_questions(AskConfig(questions=["Q?"], questions_file=str(path)))
        for i, q in enumerate(questions):
            dialog(q, i, art)
            if any(not c.isprintable() for c in shown(q)):
                return "other", f"question {i + 1} shown with a control character"
            if "\n" in q:
                return "other", f"question {i + 1} holds a line break"
    except UserError as exc:
        msg = str(exc)
        return ("error" if "\n" not in msg and str(path) in msg else "other"), msg[:300]
    except Exception:  # noqa: BLE001
        return "other", traceback.format_exc(limit=3)[-600:]
    return "read", ""


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    return folder
