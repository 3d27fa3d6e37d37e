"""nsllm export-intervention: a run's map files and settings written as one intervention artefact
(pipeline/artefact.py), found as nsllm ask finds them (pipeline/intervention_source.py)."""
from __future__ import annotations

import sys
from pathlib import Path

from neurosymbolic_llm.llama.fingerprint import WeightSamples
from neurosymbolic_llm.llama.formats import open_checkpoint
from neurosymbolic_llm.pipeline import artefact as artefacts
from neurosymbolic_llm.pipeline.configs import ExportConfig
from neurosymbolic_llm.pipeline.intervention_source import load_source
from neurosymbolic_llm.pipeline.maps import check_model, model_info
from neurosymbolic_llm.pipeline.paths import results_dir
from neurosymbolic_llm.pipeline.saved_runs import located


def export(cfg: ExportConfig) -> int:
    """Write the artefact of a run's map files and settings (no model is loaded: the maps' own
    record of their model goes into it)."""
    art, where = load_source(cfg, artefact_first=False)
    if WeightSamples.from_json(art.model.get("weights")) is None and cfg.allow_other_weights:
        art.model = _restamped(cfg, art, where)
    out = Path(cfg.out).expanduser() if cfg.out else \
        results_dir(cfg.run_name or cfg.run or "export", cfg.programs_dir) / artefacts.FOLDER_NAME
    artefacts.save_intervention(out, art)
    print(f"intervention of {where} written to {out}")
    return 0


def _restamped(cfg: ExportConfig, art: artefacts.TrainedIntervention, where: str) -> dict:
    """Maps of an older version name their model by a fingerprint of its files: with
    --allow_other_weights (the user vouches that --chpt_dir is the model they were made on) the
    artefact gets that checkpoint's content fingerprint instead (read without loading the model)."""
    ckpt = open_checkpoint(located(cfg.chpt_dir), cfg.tokenizer_path or None)
    args = ckpt.args()
    info = model_info(ckpt.fingerprint(), args.dim, args.n_layers, ckpt.weight_samples())
    check_model(art.model, info, where, allow_other_weights=True)  # sizes must still agree
    print(f"note: {where} carried an older fingerprint; the artefact names {ckpt.path} instead "
          f"(--allow_other_weights: the model they were made on)", file=sys.stderr)
    return info
