"""Build the embedded demo model: a tiny Llama 3 trained from scratch on the pipeline's arithmetic
prompts, saved in Meta's layout (params.json, consolidated.00.pth, tokenizer.model).

    python Programs/demo/make_tiny_llama.py                   # Programs/models/demo_llama/ (reused if built)
    python Programs/demo/make_tiny_llama.py --preset reduced  # about a minute, for CI (weaker model)
    python Programs/demo/make_tiny_llama.py --report 300      # also measure accuracy and read-outs

The recipe and why it looks the way it does: Programs/demo/README.md and demo/recipe.py.
"""
import argparse
import dataclasses
import sys

from neurosymbolic_llm.demo.recipe import PRESETS, PretrainSettings
from neurosymbolic_llm.pipeline.errors import run_entry_point
from neurosymbolic_llm.pipeline.paths import models_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(models_dir() / "demo_llama"), help="checkpoint folder")
    ap.add_argument("--preset", default="full", choices=sorted(PRESETS), help="settings preset")
    ap.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    ap.add_argument("--seed", type=int, help="seed of data, initialisation and order (default 0)")
    ap.add_argument("--force", action="store_true", help="rebuild even if the folder matches")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (default: OMP_NUM_THREADS; more than one only pays on idle cores)")
    ap.add_argument("--report", type=int, default=0, metavar="N",
                    help="afterwards, measure plain accuracy and per-layer read-outs on N test problems")
    args = ap.parse_args(argv)

    import torch  # after parsing: --help loads no torch

    from neurosymbolic_llm.demo import report
    from neurosymbolic_llm.demo.pretraining import build_demo_model

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = PretrainSettings(**PRESETS[args.preset])
    overrides = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    out = build_demo_model(args.out, settings, force=args.force)
    if args.report:
        report.report(out, args.report, seed=settings.seed + 1)
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main))
