"""Stage 1 on its own (METHOD §7): the same options as train_encoders_and_decoders.py, always gathering.

    python Programs/gather_hidden_states.py --run_name R [--training_data_df_path T ...]
    torchrun --nproc_per_node N Programs/gather_hidden_states.py --run_name R ...   # data-parallel
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_encoders_and_decoders import TrainEncodersConfig  # noqa: E402
from utils.config import parse_config  # noqa: E402
from utils.errors import run_entry_point  # noqa: E402
from utils.gathering import run_gather  # noqa: E402


def main(argv=None) -> int:
    cfg = parse_config(TrainEncodersConfig, argv, description=__doc__)
    run_gather(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
