"""Which layers to read: the encoder's read, chosen on the validation split (stage 2's accuracy
table, stage 3's --symbolic_encoding_layer auto). Torch-free.

A read is one residual layer (the paper's encoder, a layer number) or several layers read at once by
one linear map of their concatenated states (a key such as "3+4+5", stage 2's
--joint_encoder_layers): one name for both, `ReadKey`, in options, map files and tables.
"""
from __future__ import annotations

from typing import Iterable, Union

from neurosymbolic_llm.pipeline.errors import ConfigError, DataError

ReadKey = Union[int, str]  # 4, or "3+4+5"
JOINER = "+"


def read_layers(key) -> tuple[int, ...]:
    """The layers of a read, ascending: 4 -> (4,); "3+4+5" -> (3, 4, 5); "4" -> (4,). A ConfigError
    names a key that is not a layer number or increasing layer numbers joined by '+'."""
    if isinstance(key, bool):
        raise ConfigError(f"encoder read {key!r}: expected a layer number or layers joined by '+'")
    if isinstance(key, int):
        layers = (key,)
    else:
        parts = str(key).strip().split(JOINER)
        if not all(p.strip().isdigit() for p in parts):
            raise ConfigError(f"encoder read {key!r}: expected a layer number or layers joined by '+' (e.g. 3+4+5)")
        layers = tuple(int(p) for p in parts)
    if list(layers) != sorted(set(layers)):
        raise ConfigError(f"encoder read {key!r}: its layers must increase, each once (e.g. 3+4+5)")
    return layers


def read_key(layers: Iterable[int] | ReadKey) -> ReadKey:
    """The canonical key of a read: one layer -> that int; several -> "3+4+5" (also from "4" or a key)."""
    if isinstance(layers, (int, str)):
        layers = read_layers(layers)
    layers = tuple(int(l) for l in layers)
    return layers[0] if len(layers) == 1 else JOINER.join(map(str, layers))


def is_joint_key(value) -> bool:
    """Whether `value` is a joint read's canonical key ("3+4+5": two or more increasing layers), as
    map files and artefacts must store it."""
    try:
        return isinstance(value, str) and len(read_layers(value)) > 1 and read_key(value) == value
    except ConfigError:
        return False


def best_encoding_layer(val_accuracy: dict, max_layer: int) -> ReadKey:
    """The read (a layer, or layers read at once) whose encoder decoded the most validation questions
    (x, y and type all right), among reads whose last layer is <= max_layer (the first decoding layer:
    the answer must be known before it is written); ties go to the read that ends earliest, then to
    the one with fewer layers. val_accuracy: {read key: fraction}, from the encoder file's
    extra["val_all_accuracy"] (stage 2)."""
    candidates = {read_key(k): float(a) for k, a in val_accuracy.items() if read_layers(k)[-1] <= max_layer}
    if not candidates:
        raise DataError(f"no encoder layer with a validation accuracy at or before layer {max_layer} "
                        f"(stage 2 measured {sorted(map(str, val_accuracy))})")
    order = sorted(candidates, key=lambda k: (read_layers(k)[-1], len(read_layers(k)), read_layers(k)))
    return max(order, key=lambda k: candidates[k])  # max keeps the first of equals
