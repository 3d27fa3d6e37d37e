"""Which layer to read: the encoding layer chosen on the validation split (stage 2's accuracy
table, stage 3's --symbolic_encoding_layer auto). Torch-free."""
from __future__ import annotations

from neurosymbolic_llm.pipeline.errors import DataError


def best_encoding_layer(val_accuracy: dict[int, float], max_layer: int) -> int:
    """The layer whose encoder decoded the most validation questions (x, y and type all right),
    among layers <= max_layer (the first decoding layer: the answer must be known before it is
    written); ties go to the earliest such layer. val_accuracy: {layer: fraction}, from the encoder
    file's extra["val_all_accuracy"] (stage 2)."""
    candidates = {int(l): float(a) for l, a in val_accuracy.items() if int(l) <= max_layer}
    if not candidates:
        raise DataError(f"no encoder layer with a validation accuracy at or before layer {max_layer} "
                        f"(stage 2 measured layers {sorted(int(l) for l in val_accuracy)})")
    return max(sorted(candidates), key=lambda l: candidates[l])  # max keeps the first of equals
