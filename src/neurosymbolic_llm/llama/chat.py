"""Chat formats: how a dialog becomes prompt ids. Two families cover the Llama-architecture models
we load, chosen from the model's chat template (or, without one, from its special tokens):

- Llama 3 (Meta's reference ``encode_dialog_prompt``): ``<|begin_of_text|>``, then per message
  ``<|start_header_id|>role<|end_header_id|>`` + "\\n\\n" + content.strip() + ``<|eot_id|>``, then the
  open assistant header. (Llama 3.1's Hugging Face template also writes a "Cutting Knowledge Date"
  system preamble; Meta's reference does not, and neither do we.)
- ChatML (SmolLM2, Qwen, many others): per message ``<|im_start|>`` + role + "\\n" + content +
  ``<|im_end|>`` + "\\n", then ``<|im_start|>assistant\\n``; no BOS; content is not stripped. A
  template that inserts a default system message when the dialog has none (SmolLM2's) is followed.

Every format exposes ``tokenizer``, ``end_of_turn`` (the id that ends a message; the answer's last
target in training), ``encode_message(m)`` and ``encode_dialog_prompt(messages) -> list[int]``.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

from neurosymbolic_llm.llama.errors import CheckpointError

_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"
_HEADER_START, _HEADER_END, _EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
# SmolLM2's template: '<|im_start|>system\n<default text><|im_end|>\n' under "messages[0]['role'] != 'system'"
_DEFAULT_SYSTEM = re.compile(r"!=\s*'system'.{0,80}?'<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>",
                             re.DOTALL)


def _special(tokenizer, name: str, where: str) -> int:
    if name not in tokenizer.special_tokens:
        raise CheckpointError(f"{where}: the chat format needs the special token {name}, which the "
                              f"tokenizer does not have")
    return tokenizer.special_tokens[name]


class Llama3ChatFormat:
    """Meta's Llama 3 dialog encoding (no system-prompt preamble)."""

    name = "llama3"

    def __init__(self, tokenizer, where: str = "tokenizer"):
        self.tokenizer = tokenizer
        self.header_start = _special(tokenizer, _HEADER_START, where)
        self.header_end = _special(tokenizer, _HEADER_END, where)
        self.end_of_turn = _special(tokenizer, _EOT, where)
        if tokenizer.bos_id is None:
            raise CheckpointError(f"{where}: the Llama 3 chat format begins with a BOS token, which "
                                  f"the tokenizer does not name (bos_token / bos_token_id)")

    def encode_header(self, message: dict) -> list[int]:
        enc = self.tokenizer.encode
        return ([self.header_start] + enc(message["role"], bos=False, eos=False)
                + [self.header_end] + enc("\n\n", bos=False, eos=False))

    def encode_message(self, message: dict) -> list[int]:
        return (self.encode_header(message)
                + self.tokenizer.encode(message["content"].strip(), bos=False, eos=False)
                + [self.end_of_turn])

    def encode_dialog_prompt(self, messages: Sequence[dict]) -> list[int]:
        """BOS, every message, then the open assistant header (the model answers next)."""
        ids = [self.tokenizer.bos_id]
        for m in messages:
            ids.extend(self.encode_message(m))
        ids.extend(self.encode_header({"role": "assistant", "content": ""}))
        return ids


class ChatMLFormat:
    """ChatML: ``<|im_start|>role\\ncontent<|im_end|>\\n`` per message, no BOS."""

    name = "chatml"

    def __init__(self, tokenizer, default_system: Optional[str] = None, where: str = "tokenizer"):
        self.tokenizer = tokenizer
        self.im_start = _special(tokenizer, _IM_START, where)
        self.end_of_turn = _special(tokenizer, _IM_END, where)
        self.default_system = default_system

    def encode_message(self, message: dict) -> list[int]:
        enc = self.tokenizer.encode
        return ([self.im_start] + enc(f"{message['role']}\n{message['content']}", bos=False, eos=False)
                + [self.end_of_turn] + enc("\n", bos=False, eos=False))

    def encode_dialog_prompt(self, messages: Sequence[dict]) -> list[int]:
        """(The default system message,) every message, then ``<|im_start|>assistant\\n``."""
        ids: list[int] = []
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            ids.extend(self.encode_message({"role": "system", "content": self.default_system}))
        for m in messages:
            ids.extend(self.encode_message(m))
        ids.append(self.im_start)
        ids.extend(self.tokenizer.encode("assistant\n", bos=False, eos=False))
        return ids


def chat_format_for(tokenizer, chat_template: Optional[str], where: str):
    """The chat format of a model: from its chat template when it has one, else from its special
    tokens. A template of another family is an error naming what it holds."""
    if chat_template is not None and not isinstance(chat_template, str):
        raise CheckpointError(f"{where}: chat template must be a string, got "
                              f"{type(chat_template).__name__} (named templates are not supported)")
    text = chat_template if chat_template is not None else " ".join(tokenizer.special_tokens)
    if _HEADER_START in text and _EOT in text:
        return Llama3ChatFormat(tokenizer, where)
    if _IM_START in text and _IM_END in text:
        default = None
        if chat_template is not None:
            m = _DEFAULT_SYSTEM.search(chat_template)
            if m:
                default = m.group(1).replace("\\n", "\n")
        return ChatMLFormat(tokenizer, default, where)
    what = "chat template" if chat_template is not None else "special tokens (no chat template)"
    raise CheckpointError(f"{where}: the {what} match no supported chat format: Llama 3 needs "
                          f"{_HEADER_START}/{_EOT}, ChatML needs {_IM_START}/{_IM_END}")
