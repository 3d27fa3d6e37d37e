"""Stage 1 on its own: the options of train_encoders_and_decoders.py, always gathering.

    python Programs/gather_hidden_states.py --run_name R [--training_data_df_path T ...]
    torchrun --nproc_per_node N Programs/gather_hidden_states.py --run_name R ...   # data-parallel
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils.pipeline.encoders_and_decoders import GatherConfig  # noqa: E402
from utils.pipeline.errors import run_entry_point  # noqa: E402
from utils.pipeline.gathering import run_gather  # noqa: E402
from utils.pipeline.options import parse_config  # noqa: E402


def main(argv=None) -> int:
    run_gather(parse_config(GatherConfig, argv, __doc__))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
