"""compare_runs.py: several runs' results merged into one table (the paper's Table 1), refused when
the runs were made on different rows, models or codebooks. A run that gave the neurosymbolic model the
true operands (--simulate_perfect_encoder) is a diagnostic column of its own (`diagnostic_column`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml

from neurosymbolic_llm.pipeline.errors import DataError
from neurosymbolic_llm.pipeline.method_table import label
from neurosymbolic_llm.pipeline.paths import check_run_name, results_dir
from neurosymbolic_llm.pipeline.results import (combine, environment_warnings, headline_summary, mismatches,
                                                read_fingerprints, read_results, resolve_results, write_fingerprints,
                                                write_results)
from neurosymbolic_llm.pipeline.tracking import Tracker


def compare_runs(runs: list[str], out: str = "", programs_dir: str = "", log_wandb: bool = False,
                 wandb_project: str = "", wandb_group: str = "", *, allow_mismatch: bool = False
                 ) -> tuple[dict[str, Path], list[str], list[str]]:
    """Merge several runs' results into one table (compare_runs.py); -> (written files, notes, warnings).
    The comparison is a run record of its own (stage "compare", named after its folder).

    Runs made on different test rows, models, codebooks or seen types are refused (DataError naming
    what differs) unless `allow_mismatch`; then the differences come back as warnings."""
    paths = [resolve_results(r, programs_dir) for r in runs]
    names = [p.parent.name for p in paths]
    prints = [read_fingerprints(p) for p in paths]
    differ = mismatches(names, prints)
    if differ and not allow_mismatch:
        raise DataError(f"runs {', '.join(names)} do not compare: {'; '.join(differ)}; "
                        f"rerun them on the same rows and maps, or pass --allow_mismatch to merge anyway")
    frames, renamed = [], []
    for p, name in zip(paths, names):
        frame, diagnostic = read_results(p), diagnostic_column(p)
        if diagnostic:  # the neurosymbolic method given the true operands: a column of its own
            frame["method"] = frame["method"].replace("neurosymbolic", diagnostic)
            how = "given" if diagnostic == "true_operands" else "trained and evaluated with"
            renamed.append(f"{name}: the neurosymbolic model {how} the true operands (--simulate_perfect_encoder), "
                           f"as column {label(diagnostic)!r}")
        frames.append(frame)
    merged, notes = combine(frames, names)
    notes = renamed + notes
    if not out:  # run folders of any name may be compared; the default output is a run name of its own
        check_run_name("compare_" + "_".join(names), "compare_runs: the default output folder (give --out)")
    folder = Path(out).expanduser() if out else results_dir("compare_" + "_".join(names), programs_dir)
    written = write_results(folder, merged, title="Comparison of runs " + ", ".join(names),
                            figure_title="Exact-match accuracy on the test questions, every method",
                            note="Runs: " + ", ".join(names) + ".")
    if not differ:  # the merged table was made on what its runs share
        codebooks = [p["codebook"] for p in prints if p.get("codebook")]
        write_fingerprints(folder, {**prints[0], "codebook": codebooks[0] if codebooks else None})
    warnings = [f"merged despite {d}" for d in differ] + environment_warnings(names, prints)
    tracker = Tracker(folder, stage="compare", run_name=folder.name, project=wandb_project, group=wandb_group,
                      log_wandb=log_wandb,
                      config={"runs": [str(p) for p in paths], "notes": notes, "warnings": warnings})
    tracker.table("results", merged, written["csv"])
    tracker.image("results_plot", written["png"])
    tracker.summary(headline_summary(merged))
    tracker.finish()
    return written, notes, warnings


def diagnostic_column(results_csv: Path) -> Optional[str]:
    """The column a run's neurosymbolic rows get when the run fed the true operands to the solver
    (config_fine_tune.yaml beside results.csv: simulate_perfect_encoder): "true_operands" when it only
    evaluated given maps (num_epochs 0), "write_side_alone" when its decoder was also trained so;
    None for any other run (or without a readable config)."""
    path = Path(results_csv).parent / "config_fine_tune.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return None
    if not isinstance(config, dict) or config.get("simulate_perfect_encoder") is not True:
        return None
    return "true_operands" if config.get("num_epochs") == 0 else "write_side_alone"
