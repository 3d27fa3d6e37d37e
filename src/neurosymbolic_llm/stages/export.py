"""nsllm export-intervention: a run's map files and settings written as one intervention artefact
(pipeline/artefact.py), found as nsllm ask finds them (pipeline/intervention_source.py)."""
from __future__ import annotations

import sys
from pathlib import Path

from neurosymbolic_llm.llama.fingerprint import WeightSamples
from neurosymbolic_llm.llama.formats import open_checkpoint
from neurosymbolic_llm.llama.identity import tokenizer_digest
from neurosymbolic_llm.pipeline import artefact as artefacts
from neurosymbolic_llm.pipeline.configs import ExportConfig
from neurosymbolic_llm.pipeline.errors import ConfigError
from neurosymbolic_llm.pipeline.intervention_source import load_source
from neurosymbolic_llm.pipeline.locks import stage_lock
from neurosymbolic_llm.pipeline.maps import check_model, model_info
from neurosymbolic_llm.pipeline.paths import results_dir
from neurosymbolic_llm.pipeline.saved_runs import located
from neurosymbolic_llm.pipeline.train_state import FILE_NAME as STATE_FILE

FINE_TUNE_STAGE = "fine_tune_decoders"  # stage 3's lock name (stages/fine_tune.py; no stage imports another)


def export(cfg: ExportConfig) -> int:
    """Write the artefact of a run's map files and settings (no model is loaded: the maps' own
    record of their model goes into it). With --run R: refused while R's stage 3 runs (its lock is
    held for the export, so none starts meanwhile) or when it stopped before its end (a training
    state without results.csv: the decoder is not the final one); R's own stage-3 artefact is never
    replaced without --out."""
    run = cfg.run_name or cfg.run
    if not cfg.run:
        return _export(cfg, Path(cfg.out or results_dir(run or "export", cfg.programs_dir) / artefacts.FOLDER_NAME))
    folder = results_dir(run, cfg.programs_dir)
    with stage_lock(folder, FINE_TUNE_STAGE, run):
        if (folder / STATE_FILE).is_file() and not (folder / "results.csv").is_file():
            raise ConfigError(f"--run {run}: its stage 3 stopped before the end ({folder / STATE_FILE} and no "
                              f"results.csv): its decoder is not the final one; rerun that stage 3 to finish it "
                              f"(it resumes), or export given maps with --encoder_path/--decoder_path and --out")
        out = Path(cfg.out).expanduser() if cfg.out else folder / artefacts.FOLDER_NAME
        if not cfg.out and (out / artefacts.JSON_NAME).exists():
            raise ConfigError(f"--run {run}: {out} holds the intervention its stage 3 evaluated; export writes "
                              f"only where --out DIR says (nothing was written)")
        return _export(cfg, out)


def _export(cfg: ExportConfig, out: Path) -> int:
    art, where = load_source(cfg, artefact_first=False)
    if WeightSamples.from_json(art.model.get("weights")) is None and cfg.allow_other_weights:
        art.model = _restamped(cfg, art, where)
    artefacts.save_intervention(out.expanduser(), art)
    print(f"intervention of {where} written to {out}")
    return 0


def _restamped(cfg: ExportConfig, art: artefacts.TrainedIntervention, where: str) -> dict:
    """Maps of an older version name their model by a fingerprint of its files: with
    --allow_other_weights (the user vouches that --chpt_dir is the model they were made on) the
    artefact gets that checkpoint's content fingerprint instead (read without loading the model)."""
    ckpt = open_checkpoint(located(cfg.chpt_dir, cfg.programs_dir if cfg.run else ""), cfg.tokenizer_path or None)
    args = ckpt.args()
    info = model_info(ckpt.fingerprint(), args.dim, args.n_layers, ckpt.weight_samples(),
                      tokenizer_digest(ckpt.load_tokenizer()[0]))
    check_model(art.model, info, where, allow_other_weights=True)  # sizes must still agree
    print(f"note: {where} carried an older fingerprint; the artefact names {ckpt.path} instead "
          f"(--allow_other_weights: the model they were made on)", file=sys.stderr)
    return info
