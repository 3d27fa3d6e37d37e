"""The tokenizer of a Hugging Face folder: ``tokenizer.json`` (a byte-level BPE, see bpe.py; every
added token is a special token: the pipeline never lets text produce one), the special tokens of
``tokenizer_config.json`` / ``config.json``, the stop tokens of ``generation_config.json``, and the
chat template (``tokenizer_config.json`` or ``chat_template.jinja``). The weights: hf_checkpoint.py.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from neurosymbolic_llm.llama.bpe import BPETokenizer, pattern_from_tokenizer_json
from neurosymbolic_llm.llama.checks import need_dict, need_int
from neurosymbolic_llm.llama.errors import CheckpointError, shown


def read_hf_json(path: Path, what: str) -> dict:
    """A JSON object file of a Hugging Face folder (`what` names it in the error of a missing file)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found: a Hugging Face folder needs {what}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # ValueError: JSON, huge integers
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(obj).__name__}")
    return obj


def _token_name(value) -> Optional[str]:
    """tokenizer_config.json writes special tokens as strings or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def hf_chat_template(folder) -> Optional[str]:
    """The chat template: tokenizer_config.json's ``chat_template`` or ``chat_template.jinja``."""
    folder = Path(folder)
    cfg_path = folder / "tokenizer_config.json"
    cfg = read_hf_json(cfg_path, "tokenizer_config.json") if cfg_path.is_file() else {}
    template = cfg.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template
                         if isinstance(t, dict) and t.get("name") == "default"), None)
    if template is None and (folder / "chat_template.jinja").is_file():
        try:
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise CheckpointError(f"{folder / 'chat_template.jinja'} is not UTF-8 text: {e}") from e
    return template


def _vocabulary(path: Path, tj: dict, size: Optional[int]) -> tuple[dict, dict, list]:
    """(text -> id of model.vocab, added token text -> id, tokens by id) of a tokenizer.json.
    Every id is checked before the table is allocated: an integer >= 0, below config.json's
    vocab_size (``size``) and below twice the number of tokens (gaps are allowed, a table mostly
    of gaps is not: its length stays proportional to the file)."""
    model = tj["model"]
    vocab = need_dict(path, "model.vocab", model.get("vocab") or {})
    added = tj.get("added_tokens") or []
    if not isinstance(added, list) or not all(isinstance(t, dict) and isinstance(t.get("content"), str)
                                              for t in added):
        raise CheckpointError(f"{path}: added_tokens must be a list of {{\"id\", \"content\"}} "
                              f"objects, got {shown(added)}")
    special = {t["content"]: t.get("id") for t in added}
    limit, why = 2 * (len(vocab) + len(special)), "twice the number of tokens"
    if size is not None and size < limit:
        limit, why = size, "config.json's vocab_size"
    for what, table in (("model.vocab", vocab), ("added_tokens", special)):
        for text, i in table.items():
            if not (isinstance(i, int) and not isinstance(i, bool) and 0 <= i < limit):
                raise CheckpointError(f"{path}: {what} gives {shown(text, 80)} the id {shown(i, 40)}: "
                                      f"expected an integer in 0..{limit - 1} ({why})")
    tokens: list[Optional[str]] = [None] * (max(list(vocab.values()) + list(special.values()),
                                                default=-1) + 1)
    for text, i in vocab.items():
        tokens[i] = text
    return vocab, special, tokens


def hf_tokenizer(folder) -> tuple[BPETokenizer, Optional[str]]:
    """(tokenizer, chat template or None) of a Hugging Face folder."""
    folder = Path(folder)
    path = folder / "tokenizer.json"
    tj = read_hf_json(path, "tokenizer.json (a byte-level BPE tokenizer)")
    model = need_dict(path, "model", tj.get("model") or {})
    tj["model"] = model
    if model.get("byte_fallback"):
        raise CheckpointError(f"{path}: a SentencePiece-style BPE (byte_fallback: Llama 2, TinyLlama, "
                              f"Mistral, ...) is not supported: only byte-level BPE (GPT-2 family)")
    if model.get("type") != "BPE" or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise CheckpointError(f"{path}: tokenizer model {shown(model.get('type'))} is not supported: "
                              f"only byte-level BPE (no subword prefix/suffix)")
    if tj.get("normalizer") is not None:
        raise CheckpointError(f"{path}: normalizer {shown(tj['normalizer'])} is not supported "
                              f"(byte-level BPE has none)")
    pattern = pattern_from_tokenizer_json(tj.get("pre_tokenizer"), str(path))
    config = read_hf_json(folder / "config.json", "config.json") if (folder / "config.json").is_file() else {}
    size = config.get("vocab_size")
    size = need_int(folder / "config.json", "vocab_size", size) if size is not None else None
    vocab, special, tokens = _vocabulary(path, tj, size)
    merges = model.get("merges") or []
    if not isinstance(merges, list):
        raise CheckpointError(f"{path}: model.merges must be a list, got {shown(merges)}")
    cfg_path = folder / "tokenizer_config.json"
    cfg = read_hf_json(cfg_path, "tokenizer_config.json") if cfg_path.is_file() else {}

    def token_id(key) -> Optional[int]:
        name = _token_name(cfg.get(f"{key}_token"))
        if name is not None:
            if name in special:
                return special[name]
            if name in vocab:
                return vocab[name]
            raise CheckpointError(f"{cfg_path}: {key}_token {shown(name)} is not in {path}")
        value = config.get(f"{key}_token_id")
        if isinstance(value, list):
            value = value[0] if value else None
        return None if value is None else need_int(folder / "config.json", f"{key}_token_id", value, 0)

    eos = token_id("eos")
    if eos is None:
        raise CheckpointError(f"{folder}: no eos_token (tokenizer_config.json) or eos_token_id "
                              f"(config.json)")
    eot = next((special[t] for t in ("<|eot_id|>", "<|im_end|>") if t in special), eos)
    stops = {eos, eot} | {special[t] for t in ("<|eom_id|>",) if t in special}
    gen_path = folder / "generation_config.json"
    if gen_path.is_file():
        value = read_hf_json(gen_path, "generation_config.json").get("eos_token_id")
        values = value if isinstance(value, list) else [] if value is None else [value]
        stops |= {need_int(gen_path, "eos_token_id", v, 0) for v in values}
    pad = token_id("pad")
    if pad is None:
        pad = special.get("<|finetune_right_pad_id|>", eos)
    unk = _token_name(model.get("unk_token"))
    tok = BPETokenizer.from_vocab(
        name=str(path), tokens=tokens, merges=merges, pattern=pattern,
        special_tokens=special, bos_id=token_id("bos"), eos_id=eos, eot_id=eot, pad_id=pad,
        stop_tokens=stops, unk_id=vocab.get(unk) if unk is not None else None)
    return tok, hf_chat_template(folder)


def hf_tokenizer_fingerprint(folder) -> str:
    """sha256 of tokenizer.json, tokenizer_config.json, chat_template.jinja (when present)."""
    h = hashlib.sha256(b"hf-tokenizer\n")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        p = Path(folder) / name
        h.update(f"{name}:".encode() + (p.read_bytes() if p.is_file() else b"-") + b"\n")
    return h.hexdigest()
