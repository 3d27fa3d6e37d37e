"""Tensor names of other checkpoint formats -> our state-dict keys (model.py's names).

One rule for every format: global tensors map one to one; a block's tensor `<block i>.<part>`
becomes ``layers.{i}.{our part}.weight``.
"""
from __future__ import annotations

import re
from typing import Optional


class TensorNames:
    """A format's naming: `globals_` (its name -> our key), `block_pattern` (a regex whose groups
    are the block index and the part) and `parts` (its part -> our part)."""

    def __init__(self, globals_: dict[str, str], block_pattern: str, parts: dict[str, str]):
        self.globals = globals_
        self.block_re = re.compile(block_pattern)
        self.parts = parts

    def state_key(self, name: str) -> Optional[str]:
        """Our state-dict key of a tensor name (None: not a weight of the network)."""
        if name in self.globals:
            return self.globals[name]
        m = self.block_re.match(name)
        if m and m.group(2) in self.parts:
            return f"layers.{m.group(1)}.{self.parts[m.group(2)]}.weight"
        return None
