"""Export a run's trained intervention as one shareable artefact (a folder: intervention.safetensors
with the encoder, decoders, codebook and merge parameters; intervention.json with the layers, gate
bounds, settings and the model's fingerprint; see neurosymbolic_llm/pipeline/artefact.py).

    nsllm export-intervention --run demo_ns [--out DIR]
    nsllm export-intervention --config results/R/config_fine_tune.yaml --encoder_path E --decoder_path D --out DIR

Stage 3 writes one to Programs/results/<run>/intervention/ at the end of every neurosymbolic run;
this command makes one from a run made before that, or from any maps and settings. No model is
loaded. `nsllm ask --intervention DIR` uses it.
"""
import sys

from neurosymbolic_llm.pipeline.configs import ExportConfig
from neurosymbolic_llm.pipeline.errors import run_entry_point
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.pipeline.saved_runs import with_run_config


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = parse_config(ExportConfig, with_run_config(argv), __doc__)
    from neurosymbolic_llm.stages.export import export  # after parsing: --help loads no torch

    return export(cfg)


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main))
