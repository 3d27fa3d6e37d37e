"""Tiny checkpoints in every format, built with the reference libraries (tokenizers, transformers,
gguf), for the format tests. Nothing here uses the project's loaders.

- ``make_tokenizer(folder, style)``: a byte-level BPE trained by ``tokenizers`` on a small corpus,
  saved as tokenizer.json + tokenizer_config.json (chat template). Styles: "smollm" (Digits +
  ByteLevel, ChatML with a default system message, like SmolLM2), "llama3" (Split(Llama 3 regex) +
  ByteLevel, Llama 3 header chat format), "gpt2" (ByteLevel; ChatML without a default system).
  ``full_alphabet=False`` leaves out the bytes the corpus never uses.
- ``make_hf_model(folder, variant, vocab_size)``: a random ``LlamaForCausalLM`` saved with
  ``save_pretrained`` in small safetensors shards. "tied": tied embeddings, plain RoPE, MHA;
  "gqa": Llama 3 RoPE scaling, GQA, explicit head_dim different from dim / n_heads.
- ``write_gguf(hf_folder, path, qtype)``: that model and tokenizer as a llama.cpp-style GGUF (q/k
  rows permuted to the interleaved order, Llama 3 scaling as rope_freqs, 1-D tensors in F32).
- ``build_all(root)``: both variants ("tied" with the SmolLM2-style tokenizer, "gqa" with the
  Llama 3-style one), each as a Hugging Face folder and GGUF F32, F16 and Q8_0 files.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>", "<|finetune_right_pad_id|>"]
SMOLLM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


def corpus(seed: int = 0, n: int = 3000) -> list[str]:
    rng = random.Random(seed)
    words = ("what is the sum of and plus minus times divided by answer question number greatest "
             "common divisor remainder square root compute result please give only final "
             "Paris capital France river mountain history language computer").split()
    foreign = ["été", "naïve", "日本語", "русский", "Ελληνικά", "عربى", "😀"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randrange(3, 12)):
            r = rng.random()
            if r < 0.55:
                parts.append(rng.choice(words).capitalize() if rng.random() < 0.1 else rng.choice(words))
            elif r < 0.85:
                parts.append(str(rng.randrange(10 ** rng.randrange(1, 6))))
            elif r < 0.95:
                parts.append(rng.choice(["?", ".", ",", "!", ":", "=", "+", "-", "*", "'s"]))
            else:
                parts.append(rng.choice(foreign))
        out.append(" ".join(parts) + rng.choice(["", "\n", "\n\n", "  "]))
    return out


def make_tokenizer(folder, style: str, *, vocab_size: int = 700, full_alphabet: bool = True) -> Path:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=style != "llama3")
    if style == "smollm":
        pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif style == "llama3":
        pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
                                       byte_level])
    elif style == "gpt2":
        pre = byte_level
    else:
        raise ValueError(style)
    special = LLAMA3_SPECIAL if style == "llama3" else CHATML_SPECIAL
    tok = Tokenizer(models.BPE(ignore_merges=style == "llama3"))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if full_alphabet else [])
    tok.train_from_iterator(corpus(), trainer)
    tok.save(str(folder / "tokenizer.json"))
    if style == "llama3":
        cfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
               "pad_token": "<|finetune_right_pad_id|>", "chat_template": LLAMA3_TEMPLATE}
    else:
        cfg = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
               "chat_template": SMOLLM_TEMPLATE if style == "smollm" else CHATML_TEMPLATE}
    cfg.update(tokenizer_class="PreTrainedTokenizerFast", model_max_length=4096,
               add_bos_token=False, add_eos_token=False, clean_up_tokenization_spaces=False)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))
    return folder


def tokenizer_size(folder) -> int:
    tj = json.loads((Path(folder) / "tokenizer.json").read_text())
    return max(list(tj["model"]["vocab"].values()) + [t["id"] for t in tj["added_tokens"]]) + 1


VARIANTS = {
    "tied": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-5),
    "gqa": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=32, rope_theta=10000.0, tie_word_embeddings=False,
                rms_norm_eps=1e-6,
                rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
}


def make_hf_model(folder, variant: str, vocab_size: int, seed: int = 0):
    """A random LlamaForCausalLM (weights large enough that logits vary) saved in shards."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, max_position_embeddings=512, bos_token_id=None,
                      eos_token_id=None, pad_token_id=None, **VARIANTS[variant])
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[-1]) * (4 if "embed" in name else 1))
    model.save_pretrained(folder, max_shard_size="40KB")
    return model


VARIANT_STYLE = {"tied": "smollm", "gqa": "llama3"}
QTYPES = ("F32", "F16", "Q8_0")


def build_all(root) -> dict:
    """{variant: {"hf": folder, "model": LlamaForCausalLM, "root": root, qtype: GGUF path}}."""
    root = Path(root)
    out = {}
    for variant, style in VARIANT_STYLE.items():
        folder = make_tokenizer(root / variant, style)
        model = make_hf_model(folder, variant, tokenizer_size(folder))
        entry = {"hf": folder, "model": model, "root": root}
        for q in QTYPES:
            entry[q] = write_gguf(folder, root / f"{variant}-{q}.gguf", q)
        out[variant] = entry
    return out


# ----------------------------------------------------------------------------- GGUF

_GGUF_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
               "lm_head.weight": "output.weight"}
_GGUF_LAYER = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
               "post_attention_layernorm": "ffn_norm"}


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert script: Hugging Face's rotate-half rows -> interleaved rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama3_rope_factors(rope: dict, head_dim: int, theta: float) -> np.ndarray:
    """llama.cpp's rope_freqs for Llama 3.1 scaling: the divisor of each pair's frequency."""
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old = rope["original_max_position_embeddings"]
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_gguf(hf_folder, path, qtype: str = "F32", pre: str | None = None) -> Path:
    import gguf
    from safetensors.numpy import load_file
    hf_folder, path = Path(hf_folder), Path(path)
    cfg = json.loads((hf_folder / "config.json").read_text())
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type({"F32": 0, "F16": 1, "Q8_0": 7}[qtype])
    # tokenizer
    tj = json.loads((hf_folder / "tokenizer.json").read_text())
    tc = json.loads((hf_folder / "tokenizer_config.json").read_text())
    added = {t["id"]: t["content"] for t in tj["added_tokens"]}
    n_tok = cfg["vocab_size"]
    tokens, types = [], []
    inv = {i: t for t, i in tj["model"]["vocab"].items()}
    for i in range(n_tok):
        if i in added:
            tokens.append(added[i]); types.append(gguf.TokenType.CONTROL)
        elif i in inv:
            tokens.append(inv[i]); types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]"); types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    ids = {t: i for i, t in added.items()}
    w.add_tokenizer_model("gpt2")
    if pre is None:
        pre = {"Sequence": "smollm"}.get(tj["pre_tokenizer"]["type"], "gpt-2")
        if pre == "smollm" and tj["pre_tokenizer"]["pretokenizers"][0]["type"] == "Split":
            pre = "llama-bpe"
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(ids[tc["bos_token"]])
    w.add_eos_token_id(ids[tc["eos_token"]])
    w.add_pad_token_id(ids[tc["pad_token"]])
    w.add_add_bos_token(False)
    w.add_chat_template(tc["chat_template"])
    # tensors
    state = {}
    for f in sorted(hf_folder.glob("*.safetensors")):
        state.update(load_file(str(f)))
    q = {"F32": gguf.GGMLQuantizationType.F32, "F16": gguf.GGMLQuantizationType.F16,
         "Q8_0": gguf.GGMLQuantizationType.Q8_0}[qtype]
    if rope.get("rope_type", rope.get("type")) == "llama3":
        w.add_tensor("rope_freqs.weight", _llama3_rope_factors(rope, head_dim, theta))
    for name in sorted(state):
        arr = state[name].astype(np.float32)
        if name in _GGUF_NAMES:
            gname = _GGUF_NAMES[name]
        else:
            _, _, layer, rest = name.split(".", 3)
            gname = f"blk.{layer}.{_GGUF_LAYER[rest.rsplit('.', 1)[0]]}.weight"
        if name.endswith("q_proj.weight"):
            arr = _llama_cpp_permute(arr, n_head)
        elif name.endswith("k_proj.weight"):
            arr = _llama_cpp_permute(arr, n_kv)
        if arr.ndim == 1 or q == gguf.GGMLQuantizationType.F32:
            w.add_tensor(gname, arr)
        elif q == gguf.GGMLQuantizationType.F16:
            w.add_tensor(gname, arr.astype(np.float16))
        else:
            w.add_tensor(gname, gguf.quantize(arr, q), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
