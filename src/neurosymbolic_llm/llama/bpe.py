"""Byte-level BPE tokenizers (the GPT-2 family: Llama 3, SmolLM2, ...) as tiktoken encodings.

A byte-level BPE vocabulary stores each token as text in GPT-2's byte-to-unicode alphabet (a space
is ``Ġ``) and lists its merges in priority order. ``BPETokenizer.from_vocab`` turns that into a
tiktoken encoding whose *ranks are merge priorities* (single bytes first, then merge i at rank
256 + i) and a rank -> token-id table, so token ids need not follow merge order. tiktoken only ever
sees plain text: special tokens are added by the caller (chat formats), never parsed from text.

The split of text into pieces before BPE (the pre-tokenizer) decides how numbers are cut, so it must
be exact: ``PRE_TOKENIZER_PATTERNS`` holds the known ones under llama.cpp's names
(``tokenizer.ggml.pre``); ``pattern_from_tokenizer_json`` maps a tokenizer.json pre-tokenizer onto
them. Anything else is refused, never guessed.

A byte that has no token of its own (some vocabularies lack a few of the 256) becomes the unknown
token when the vocabulary names one and is dropped otherwise, as Hugging Face's tokenizers do.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional, Sequence

import tiktoken

from neurosymbolic_llm.llama.errors import CheckpointError, shown

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# SmolLM2: every digit its own piece, then GPT-2's split; a whitespace run before a digit stays whole
# (the digit was split off first, so GPT-2's "leave one space for the next word" does not apply).
SMOLLM_PATTERN = r"\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"

PRE_TOKENIZER_PATTERNS = {
    "llama-bpe": LLAMA3_PATTERN, "llama3": LLAMA3_PATTERN, "llama-v3": LLAMA3_PATTERN,
    "gpt-2": GPT2_PATTERN, "gpt2": GPT2_PATTERN,
    "smollm": SMOLLM_PATTERN,
}

# tiktoken panics on very long inputs, and on long runs of (non-)whitespace: split first.
_MAX_CHARS = 400_000
_MAX_RUN = 25_000


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (printable Latin-1 bytes map to
    themselves, the other 68 to U+0100 onwards)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_BYTE_OF_CHAR = {c: b for b, c in bytes_to_unicode().items()}


def token_bytes(text: str, where: str = "") -> bytes:
    """A byte-level token's text (GPT-2 alphabet) -> its bytes."""
    try:
        return bytes(_BYTE_OF_CHAR[c] for c in text)
    except KeyError as e:
        raise CheckpointError(f"{where}token {shown(text)} holds the character {e.args[0]!r}, which is "
                              f"not in the byte-level alphabet: not a byte-level BPE vocabulary") from None


def pattern_from_tokenizer_json(pre_tokenizer: Optional[dict], where: str) -> str:
    """The split pattern of a tokenizer.json ``pre_tokenizer`` (known layouts only)."""
    def is_byte_level(p, use_regex):
        return (p.get("type") == "ByteLevel" and bool(p.get("use_regex", True)) == use_regex
                and not p.get("add_prefix_space", False))
    p = pre_tokenizer or {}
    steps = (p.get("pretokenizers", []) if p.get("type") == "Sequence" else [p]) \
        if isinstance(p, dict) else None
    if isinstance(steps, list) and all(isinstance(q, dict) for q in steps):
        if len(steps) == 1 and is_byte_level(steps[0], True):
            return GPT2_PATTERN
        if len(steps) == 2 and steps[0].get("type") == "Digits" \
                and steps[0].get("individual_digits") and is_byte_level(steps[1], True):
            return SMOLLM_PATTERN
        regex = steps[0].get("pattern") if len(steps) == 2 else None
        if len(steps) == 2 and steps[0].get("type") == "Split" and is_byte_level(steps[1], False) \
                and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert") \
                and isinstance(regex, dict) and isinstance(regex.get("Regex"), str):
            return regex["Regex"]
    raise CheckpointError(f"{where}: pre_tokenizer {shown(p, 160)} is not supported: known are "
                          f"ByteLevel (GPT-2), Digits(individual) + ByteLevel (SmolLM2), "
                          f"Split(regex, Isolated) + ByteLevel without regex (Llama 3)")


class BPETokenizer:
    """A byte-level BPE tokenizer with named special ids.

    ``encode(s, bos, eos) -> list[int]`` (special-token text inside ``s`` is plain text),
    ``decode(ids) -> str``, ``special_tokens: dict[str, int]``, ``bos_id, eos_id, eot_id`` (end of
    a chat turn: ``<|eot_id|>``, ``<|im_end|>``, ...), ``pad_id``, ``unk_id`` (or None),
    ``stop_tokens: set[int]``, ``n_words`` (ids are 0..n_words-1)."""

    def __init__(self, *, name: str, ranks: dict[bytes, int], rank_ids: Optional[Sequence[int]],
                 id_bytes: Sequence[bytes], pattern: str, special_tokens: dict[str, int],
                 bos_id: Optional[int], eos_id: int, eot_id: int, pad_id: int,
                 stop_tokens: Iterable[int], unk_id: Optional[int] = None):
        self.name = name
        try:
            self.model = tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks,
                                           special_tokens={})
        except ValueError as e:  # the split pattern of a tokenizer.json is not a valid regex
            raise CheckpointError(f"{name}: the pre-tokenizer's pattern {shown(pattern)} is not "
                                  f"usable: {shown(str(e))}") from e
        self.pattern = pattern
        # tiktoken rank -> token id (-1: a byte without a token, dropped); None: ranks are ids
        self._rank_ids = list(rank_ids) if rank_ids is not None else None
        self._id_bytes = list(id_bytes)
        self.special_tokens = dict(special_tokens)
        self.n_words = len(self._id_bytes)
        self.bos_id, self.eos_id, self.eot_id, self.pad_id = bos_id, eos_id, eot_id, pad_id
        self.unk_id = unk_id
        self.stop_tokens = set(int(t) for t in stop_tokens)
        for what, i in (("bos", bos_id), ("eos", eos_id), ("eot", eot_id), ("pad", pad_id),
                        ("unk", unk_id), *(("stop", t) for t in self.stop_tokens)):
            if i is not None and not 0 <= i < self.n_words:
                raise CheckpointError(f"{name}: {what} token id {i} is outside the vocabulary "
                                      f"(0..{self.n_words - 1})")

    # ---------------------------------------------------------------- builders
    @classmethod
    def from_vocab(cls, *, name: str, tokens: Sequence[Optional[str]], merges: Sequence[str | Sequence[str]],
                   pattern: str, special_tokens: dict[str, int], bos_id: Optional[int],
                   eos_id: int, eot_id: int, pad_id: int, stop_tokens: Iterable[int],
                   unk_id: Optional[int] = None) -> "BPETokenizer":
        """From a byte-level vocabulary: ``tokens[id]`` in the GPT-2 alphabet (ids of
        ``special_tokens`` and unused ids (None) are never produced by BPE) and ``merges`` in
        priority order ("a b" or (a, b))."""
        specials = {i: s for s, i in special_tokens.items()}
        id_bytes: list[bytes] = []
        id_of: dict[bytes, int] = {}
        for i, text in enumerate(tokens):
            if i in specials:
                id_bytes.append(specials[i].encode("utf-8"))
                continue
            if text is None:  # an id no token uses (vocabularies may have gaps)
                id_bytes.append(b"")
                continue
            if not isinstance(text, str):
                raise CheckpointError(f"{name}: token {i} is {shown(text)}, not a string")
            b = token_bytes(text, f"{name}: ")
            id_bytes.append(b)
            id_of.setdefault(b, i)
        ranks: dict[bytes, int] = {}
        rank_ids: list[int] = []
        for byte in range(256):  # single bytes first (their order does not matter to BPE)
            b = bytes([byte])
            ranks[b] = len(rank_ids)
            rank_ids.append(id_of.get(b, unk_id if unk_id is not None else -1))
        for k, m in enumerate(merges):
            pair = m.split(" ", 1) if isinstance(m, str) else m
            if not isinstance(pair, (list, tuple)) or len(pair) != 2 \
                    or not all(isinstance(x, str) for x in pair):
                raise CheckpointError(f"{name}: merge {k} is {shown(m)}: expected \"a b\" or a "
                                      f"pair of strings")
            a, c = pair
            b = token_bytes(a + c, f"{name}: merge {k}: ")
            if b in ranks:
                continue  # another merge made this token earlier: the first one decides its rank
            if b not in id_of:
                raise CheckpointError(f"{name}: merge {k} ({shown(a, 80)} {shown(c, 80)}) makes "
                                      f"{shown(a + c)}, which is not in the vocabulary")
            ranks[b] = len(rank_ids)
            rank_ids.append(id_of[b])
        identity = rank_ids == list(range(len(rank_ids)))
        return cls(name=name, ranks=ranks, rank_ids=None if identity else rank_ids, id_bytes=id_bytes,
                   pattern=pattern, special_tokens=special_tokens, bos_id=bos_id, eos_id=eos_id,
                   eot_id=eot_id, pad_id=pad_id, stop_tokens=stop_tokens, unk_id=unk_id)

    # ---------------------------------------------------------------- use
    def encode(self, s: str, *, bos: bool, eos: bool) -> list[int]:
        """Token ids of ``s``; special-token text inside ``s`` is encoded as plain text."""
        if not isinstance(s, str):
            raise TypeError(f"encode expects a str, got {type(s).__name__}")
        if bos and self.bos_id is None:
            raise CheckpointError(f"{self.name}: the tokenizer has no BOS token")
        ids: list[int] = [self.bos_id] if bos else []
        for i in range(0, len(s), _MAX_CHARS):
            for piece in split_runs(s[i:i + _MAX_CHARS], _MAX_RUN):
                ranks = self.model.encode_ordinary(piece)
                if self._rank_ids is None:
                    ids.extend(ranks)
                else:
                    ids.extend(t for t in (self._rank_ids[r] for r in ranks) if t >= 0)
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self._id_bytes[int(t)] for t in ids).decode("utf-8", errors="replace")

    def token_text(self, i: int) -> bytes:
        """The bytes of token ``i`` (a special token: its name)."""
        return self._id_bytes[int(i)]


def split_runs(s: str, max_run: int) -> Iterator[str]:
    """Cut ``s`` so that no piece holds more than ``max_run`` consecutive whitespace or consecutive
    non-whitespace characters (the cut falls inside such a run, which a BPE would split anyway)."""
    start, run, prev_space = 0, 0, None
    for i, ch in enumerate(s):
        space = ch.isspace()
        run = run + 1 if space == prev_space else 1
        prev_space = space
        if run > max_run:
            yield s[start:i]
            start, run = i, 1
    yield s[start:]
