"""Rewrite a Meta-format checkpoint for another model-parallel size (number of .pth shards).

    python Programs/reshard_checkpoint.py SRC_DIR DST_DIR --model_parallel_size M

The shards of SRC_DIR are merged and split again into M shards along fairscale's parallel dims
(neurosymbolic_llm/llama/checkpoint.py: reshard); params.json and tokenizer.model are copied. M must divide the
number of attention heads, of key/value heads, the vocabulary and the FFN hidden size: 70B (8 shards)
-> 4 or 2 GPUs, 8B (1 shard) -> 2, 4 or 8 GPUs. A checkpoint of M shards then runs under
`torchrun --nproc_per_node N` with N a multiple of M (N/M data-parallel groups), see docs/SCALING.md.
Resharding 1 -> M -> 1 gives back identical tensors.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from neurosymbolic_llm.pipeline.errors import UserError, run_entry_point


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="checkpoint folder to read (params.json, consolidated.*.pth)")
    ap.add_argument("dst", help="folder to write: new, empty, or an earlier reshard's output (its "
                                "consolidated.*.pth shards are replaced); a folder holding other files is refused")
    ap.add_argument("--model_parallel_size", "-m", type=int, required=True,
                    help="number of shards to write (= processes per model under torchrun)")
    a = ap.parse_args(argv)
    from neurosymbolic_llm.llama.checkpoint import load_params, reshard, shard_paths  # after parsing: fast --help

    src, dst = Path(a.src).expanduser(), Path(a.dst).expanduser()
    if src.resolve() == dst.resolve():
        raise UserError(f"reshard: source and destination are the same folder {src}; write to another one")
    params = load_params(src)
    n_src = len(shard_paths(src))
    reshard(src, dst, a.model_parallel_size)
    print(f"{src} ({n_src} shard(s)) -> {dst} ({a.model_parallel_size} shard(s)); "
          f"dim {params['dim']}, {params['n_layers']} layers, {params['n_heads']} heads")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
