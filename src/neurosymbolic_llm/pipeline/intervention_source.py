"""Where a trained intervention comes from, first match wins: --intervention DIR (an artefact,
artefact.py); --run R whose results/R/intervention/ exists; the maps of the configuration
(--encoder_path, --decoder_path; the run's fine-tuned decoder when there is one). nsllm ask and
export-intervention read it the same way."""
from __future__ import annotations

from pathlib import Path

from neurosymbolic_llm.pipeline import artefact as artefacts
from neurosymbolic_llm.pipeline.errors import ConfigError
from neurosymbolic_llm.pipeline.fine_tune_inputs import load_maps_for
from neurosymbolic_llm.pipeline.paths import decoder_output_path, results_dir
from neurosymbolic_llm.pipeline.saved_runs import located

ARTEFACT = " (intervention)"  # how load_source names an artefact it read


def load_source(cfg, *, artefact_first: bool = True) -> tuple[artefacts.TrainedIntervention, str]:
    """(intervention, where it was read) from the artefact (--intervention, or the run's unless not
    `artefact_first`) or the configuration's maps (the run's fine-tuned decoder when it exists),
    checked in themselves; the model is checked by the caller."""
    folder = Path(cfg.intervention).expanduser() if getattr(cfg, "intervention", "") else None
    if folder is None and cfg.run and artefact_first:
        run_folder = results_dir(cfg.run_name or cfg.run, cfg.programs_dir) / artefacts.FOLDER_NAME
        folder = run_folder if (run_folder / artefacts.JSON_NAME).is_file() else None
    if folder is not None:
        return artefacts.load_intervention(folder), f"{folder}{ARTEFACT}"
    if not cfg.encoder_path or not cfg.decoder_path:
        raise ConfigError(f"{'--run ' + cfg.run + ' has no maps (not a neurosymbolic run?): ' if cfg.run else ''}"
                          f"ask needs --run, --intervention, or --encoder_path and --decoder_path")
    base = cfg.programs_dir if cfg.run else ""  # a run's saved paths are relative to its --programs_dir
    cfg.encoder_path, cfg.decoder_path = (str(located(p, base)) for p in (cfg.encoder_path, cfg.decoder_path))
    tuned = decoder_output_path(cfg, cfg.run_name) if cfg.run and cfg.run_name else None
    if tuned is not None and tuned.is_file():
        cfg.decoder_path = str(tuned)
    if cfg.symbolic_encoding_layer == "auto":
        raise ConfigError("--symbolic_encoding_layer auto: give the layer number (a run's saved configuration has it)")
    return artefacts.from_maps(cfg, load_maps_for(cfg, None), run=cfg.run_name), f"{cfg.decoder_path} (maps)"
