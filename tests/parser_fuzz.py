"""The checkpoint-parser fuzzer shared by tests/test_fuzz_parsers.py (a short, reproducible run) and
benchmarks/fuzz_parsers.py (a long one).

An example is one valid tiny checkpoint (Meta folder, Hugging Face folder, GGUF file) with one of
its files damaged: random byte flips, a truncation, or one field replaced by a hostile value (huge,
negative, zero, NaN, a string, a list, a path out of the folder, ...) or deleted; JSON files by key
path, GGUF by metadata item, tensor info or count, safetensors by header entry or header length
(tests/hostile_files.py). Hypothesis draws the choices, so a run is reproducible.

Each example is loaded the way the pipeline does (``Llama.build``: architecture, tokenizer, weights,
fingerprints), then a chat prompt is encoded and run through the model, in a worker process that
has at most ``MEMORY_HEADROOM`` of address space beyond its own start-up footprint (RLIMIT_AS) and
``TIMEOUT_S`` per example. The outcome is ``loaded``, ``error`` (a LlamaError of one line) or a
finding: ``other`` (any other exception, or an error of several lines), ``memory`` (MemoryError or
an allocation refused), ``hang`` (past the timeout) or ``crash`` (the worker died).

Run alone as ``python tests/parser_fuzz.py --worker``: the worker loop (one checkpoint path per
line on stdin, one result line on stdout).
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import hostile_files as hf

TIMEOUT_S = 60
MEMORY_HEADROOM = 2 << 30
MAX_ERROR_CHARS = 2000
_RESULT = "@@fuzz-result "
OK = ("loaded", "error")

# hostile values for JSON fields and GGUF metadata
JSON_VALUES = [0, -1, 1, 2 ** 31, 2 ** 40, 2 ** 64, 300_000_000, 1e308, float("nan"), float("inf"),
               -0.0, 0.5, "x", "", "64", "../../../../etc/passwd", "/etc/passwd", "x" * 5000, [],
               [1, 2], ["a", 3], {}, {"type": "x"}, None, True, False]
# keys of params.json, config.json, tokenizer*.json and the index that the tiny files lack
INSERTED_KEYS = ["rope_freq_factors", "ffn_dim_multiplier", "hidden_dim", "head_dim", "n_kv_heads",
                 "use_scaled_rope", "rope_scaling", "rope_parameters", "num_key_value_heads",
                 "eos_token_id", "bos_token_id", "pad_token", "unk_token", "chat_template",
                 "normalizer", "added_tokens", "weight_map", "__metadata__"]
GGUF_VALUES = [(hf.U32, 0), (hf.U32, 7), (hf.U32, 2 ** 32 - 1), (hf.I32, -1), (hf.U64, 2 ** 64 - 1),
               (hf.U64, 2 ** 40), (hf.F32, float("nan")), (hf.F64, float("inf")), (hf.F32, 0.0),
               (hf.STRING, "x"), (hf.STRING, ""), (hf.STRING, "x" * 5000), (hf.BOOL, True),
               (hf.ARRAY, (hf.U8, [])), (hf.ARRAY, (hf.STRING, ["a", "b"])),
               (hf.ARRAY, (hf.I32, [0, -1, 2 ** 31 - 1])), (hf.ARRAY, (hf.ARRAY, [(hf.U8, [1])]))]
GGUF_DIMS = [[0], [2 ** 40], [64, 2 ** 62], [1, 1, 1, 1, 1], [64], [63, 64], [2 ** 64 - 1, 2]]
GGUF_TYPES = [0, 1, 2, 8, 9, 12, 15, 24, 26, 28, 30, 39, 41, 99, 2 ** 32 - 1]
GGUF_OFFSETS = [0, 1, 7, 32, 2 ** 40, 2 ** 64 - 1]
GGUF_NAMES = ["", "x" * 300, "blk.99.attn_q.weight", "blk.0.attn_q.bias", "output.weight",
              "token_embd.weight", "rope_freqs.weight"]
HEADER_LENGTHS = [0, 1, 2 ** 40, 2 ** 64 - 1]


# ----------------------------------------------------------------------------- examples

@dataclass
class Source:
    """A valid checkpoint: ``kind`` (meta, hf, gguf) and its path."""
    name: str
    kind: str
    path: Path

    def files(self) -> list[str]:
        if self.kind == "gguf":
            return [self.path.name]
        return sorted(p.name for p in self.path.iterdir() if p.is_file())


def sources(tiny_ckpt: Path, tiny_formats: dict) -> list[Source]:
    """The corpus: tests/conftest.py's tiny Meta folder and tests/tiny_formats.py's checkpoints."""
    return [Source("meta", "meta", Path(tiny_ckpt)),
            Source("hf-tied", "hf", tiny_formats["tied"]["hf"]),
            Source("hf-gqa", "hf", tiny_formats["gqa"]["hf"]),
            Source("gguf-tied-Q8_0", "gguf", tiny_formats["tied"]["Q8_0"]),
            Source("gguf-gqa-F32", "gguf", tiny_formats["gqa"]["F32"])]


def draw_example(draw, corpus: list[Source], workdir: Path) -> tuple[str, Path]:
    """(description, path) of one damaged checkpoint written under ``workdir`` (``draw``:
    hypothesis' ``data.draw``). Files left alone are symbolic links to the source."""
    import hypothesis.strategies as st
    src = draw(st.sampled_from(corpus))
    name = draw(st.sampled_from(src.files()))
    raw = (src.path if src.kind == "gguf" else src.path / name).read_bytes()
    if src.kind == "gguf":
        how, raw = mutate_gguf(draw, raw)
    elif name.endswith(".json"):
        how, raw = mutate_json(draw, raw)
    elif name.endswith(".safetensors"):
        how, raw = mutate_safetensors(draw, raw)
    else:  # .pth, tokenizer.model: bytes only
        how, raw = mutate_bytes(draw, raw)
    if src.kind == "gguf":
        path = workdir / name
    else:
        path = workdir / src.name
        path.mkdir()
        for other in src.files():
            if other != name:
                (path / other).symlink_to(src.path / other)
    (path if src.kind == "gguf" else path / name).write_bytes(raw)
    return f"{src.name}/{name}: {how}", path


def mutate_bytes(draw, raw: bytes, end: int | None = None) -> tuple[str, bytes]:
    """Flip 1-8 bytes (before ``end``: a header), truncate, or cut out / insert a short run."""
    import hypothesis.strategies as st
    end = min(end or len(raw), len(raw))
    kind = draw(st.sampled_from(["flip", "truncate", "splice"]))
    if kind == "flip":
        spots = draw(st.lists(st.tuples(st.integers(0, end - 1), st.integers(0, 255)),
                              min_size=1, max_size=8))
        out = bytearray(raw)
        for i, b in spots:
            out[i] = b
        return f"bytes set {spots}", bytes(out)
    if kind == "truncate":
        cut = draw(st.integers(0, len(raw) - 1))
        return f"truncated to {cut} bytes", raw[:cut]
    at, n = draw(st.integers(0, end - 1)), draw(st.integers(-16, 16))
    if n < 0:
        return f"{-n} bytes cut at {at}", raw[:at] + raw[at - n:]
    return f"{n} bytes 0xff inserted at {at}", raw[:at] + b"\xff" * n + raw[at:]


def _json_edit(draw, obj) -> tuple[str, object]:
    import hypothesis.strategies as st
    paths = hf.json_paths(obj)
    if not paths:
        return "replaced whole", draw(st.sampled_from(JSON_VALUES))
    how = draw(st.sampled_from(["replace", "delete", "insert"]))
    if how == "insert" and isinstance(obj, dict):  # a key the valid file lacks
        key, value = draw(st.sampled_from(INSERTED_KEYS)), draw(st.sampled_from(JSON_VALUES))
        return f"[{key!r}] = {value!r:.60} added", {**obj, key: value}
    path = draw(st.sampled_from(paths))
    if how != "delete":
        value = draw(st.sampled_from(JSON_VALUES))
        return f"{list(path)} = {value!r:.60}", hf.set_json(obj, path, value)
    out = hf.set_json(obj, path, None)
    parent = out
    for k in path[:-1]:
        parent = parent[k]
    del parent[path[-1]]
    return f"{list(path)} deleted", out


def mutate_json(draw, raw: bytes) -> tuple[str, bytes]:
    import hypothesis.strategies as st
    if draw(st.integers(0, 3)) == 0:
        return mutate_bytes(draw, raw)
    how, obj = _json_edit(draw, json.loads(raw))
    return how, json.dumps(obj).encode()


def mutate_safetensors(draw, raw: bytes) -> tuple[str, bytes]:
    import hypothesis.strategies as st
    header, data = hf.safetensors_parts(raw)
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return mutate_bytes(draw, raw, 8 + len(raw) - len(data))
    if kind == 1:
        n = draw(st.sampled_from(HEADER_LENGTHS))
        return f"header length {n}", hf.safetensors_bytes(header, data, n)
    how, header = _json_edit(draw, header)
    return f"header {how}", hf.safetensors_bytes(header, data)


def mutate_gguf(draw, raw: bytes) -> tuple[str, bytes]:
    import hypothesis.strategies as st
    g = hf.GGUF.parse(raw)
    kind = draw(st.sampled_from(["item", "drop", "tensor", "count", "bytes"]))
    if kind == "bytes":
        return mutate_bytes(draw, raw, len(raw) - len(g.data))
    if kind == "count":
        which = draw(st.sampled_from(["n_tensors", "n_kv"]))
        real = len(g.tensors) if which == "n_tensors" else len(g.items)
        n = draw(st.sampled_from([0, real - 1, real + 1, 2 ** 32, 2 ** 64 - 1]))
        return f"{which} = {n}", g.to_bytes(**{which: n})
    if kind in ("item", "drop"):
        item = draw(st.sampled_from(g.items))
        if kind == "drop":
            g.items.remove(item)
            return f"metadata {item.key} deleted", g.to_bytes()
        item.kind, item.value = draw(st.sampled_from(GGUF_VALUES))
        return f"metadata {item.key} = {item.value!r:.60}", g.to_bytes()
    t = draw(st.sampled_from(g.tensors))
    what = draw(st.sampled_from(["dims", "type_id", "offset", "name"]))
    value = draw(st.sampled_from({"dims": GGUF_DIMS, "type_id": GGUF_TYPES, "offset": GGUF_OFFSETS,
                                  "name": GGUF_NAMES}[what]))
    setattr(t, what, value)
    return f"tensor {g.tensors.index(t)} {what} = {value!r:.60}", g.to_bytes()


# ----------------------------------------------------------------------------- the worker

@dataclass
class Outcome:
    kind: str  # loaded, error, other, memory, hang, crash
    detail: str = ""


class Worker:
    """A worker process loading checkpoints under a memory limit; restarted after a hang or a
    crash."""

    def __init__(self, timeout_s: float = TIMEOUT_S):
        self.timeout_s = timeout_s
        self.proc = None

    def _start(self):
        src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's package
        env = dict(os.environ, OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        if self._read(300) != "ready":
            raise RuntimeError("the fuzz worker did not start")

    def _read(self, timeout_s: float):
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
            if not ready:
                return None
            line = self.proc.stdout.readline()
            if not line:
                return ""  # the worker died
            if line.startswith(_RESULT):
                return line[len(_RESULT):].strip()

    def run(self, path: Path) -> Outcome:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        line = self._read(self.timeout_s)
        if line:
            return Outcome(**json.loads(line))
        kind = "hang" if line is None else "crash"
        self.close()
        return Outcome(kind, f"no answer within {self.timeout_s:.0f} s" if kind == "hang"
                       else "the worker process died")

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def exercise(path: str) -> None:
    """Load a checkpoint as the pipeline does, encode a chat prompt, run the model on it."""
    import torch
    from neurosymbolic_llm.llama.generation import Llama
    llama = Llama.build(path, device="cpu", dtype=torch.float32, max_seq_len=64, max_batch_size=1)
    dialog = [{"role": "user", "content": "What is 12 + 7? été 😀"}]
    ids = llama.formatter.encode_dialog_prompt(dialog)
    assert llama.tokenizer.decode(ids)
    with torch.no_grad():
        llama.model(torch.tensor([ids[-32:]]))


def classify(exc: BaseException) -> Outcome:
    import traceback
    from neurosymbolic_llm.llama.errors import LlamaError
    text = str(exc)
    if isinstance(exc, LlamaError) and "\n" not in text and len(text) <= MAX_ERROR_CHARS:
        return Outcome("error", text[:300])
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    memory = isinstance(exc, MemoryError) or "can't allocate memory" in text
    return Outcome("memory" if memory else "other", f"{type(exc).__name__}{at}: {text[:300]}")


def worker_main() -> int:
    import resource

    import torch
    torch.set_num_threads(1)
    from neurosymbolic_llm.llama import generation  # noqa: F401  (imports before the limit)
    size = int(next(line.split()[1] for line in open("/proc/self/status")
                    if line.startswith("VmSize"))) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_HEADROOM, size + MEMORY_HEADROOM))
    print(_RESULT + "ready", flush=True)
    for line in sys.stdin:
        try:
            exercise(line.strip())
            out = Outcome("loaded")
        except Exception as e:  # noqa: BLE001  (classifying every exception is the point)
            out = classify(e)
        print(_RESULT + json.dumps(out.__dict__), flush=True)
    return 0


def fresh_dir(root: Path) -> Path:
    """An empty folder for one example (the previous example's is removed)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return Path(tempfile.mkdtemp(dir=root))


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    raise SystemExit(worker_main())
