"""Hostile inputs to the entry scripts (issue 19, the pipeline side), grouped by the issue's classes;
run by benchmarks/faults.py as a process, or on its own:

    python benchmarks/hostile_inputs.py [--src DIR] [--keep DIR]

Every case runs the real entry scripts as processes (Programs/*.py, with the package of `--src`,
default this checkout's src/) on a tiny random Llama and random maps, and is judged on what the user
sees and what is left on disk:
- one line: exit code 2, no traceback, and one "error: ..." line, the last on stderr (at most 2,100
  characters, naming the file at fault where there is one), and where the case has a rerun (a
  crashed first attempt, then the repaired input) the rerun works;
- traceback: a Python traceback on stderr;
- data loss: a file the command must not touch was emptied, changed or deleted (a lock's link
  target, another run's maps, another model's shard), a file was written outside --programs_dir,
  a file holding NaN/inf was written, an output folder was written (whole or in part) from an input
  that is not what it claims, or a decoder was saved that names maps it was not trained on.
`--src` of an older checkout gives the "before" counts of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import harness  # beside this file (a script's folder is on its path)
from harness import ENV, PROGRAMS, ROOT, stage1, stage3


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900, **kw)

CLASSES = {1: "a symbolic link at a run's lock file", 2: "reshard into a folder holding other files",
           3: "run names that are paths", 4: "NaN and inf (options, gathered data, training states)",
           6: "files that are not what they claim, a failed attempt blocking the next",
           7: "over-long echoes, YAML alias bombs", 8: "maps replaced while stage 3 trains"}
LINE_LIMIT = 2100


@dataclass
class Outcome:
    cls: int
    case: str
    seen: str         # the last stderr line (or what happened)
    one_line: bool
    traceback: bool
    loss: str         # what was lost or wrongly written; "" for nothing


OUTCOMES: list[Outcome] = []


def judge(cls: int, case: str, r: subprocess.CompletedProcess, loss: str = "", rerun_ok: bool = True,
          names: str = "") -> Outcome:
    """Record a case: one line needs exit code 2, no traceback, one short "error:" line, the last one
    (progress bars before it are fine), naming `names` (the file at fault) where given, and for a
    case with a rerun, `rerun_ok`."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    one = (r.returncode == 2 and "Traceback" not in r.stderr and len(errors) == 1 and lines[-1] == errors[0]
           and len(errors[0]) <= LINE_LIMIT and names in errors[0] and rerun_ok)
    seen = (lines[-1] if lines else f"(nothing on stderr, rc {r.returncode})")
    seen = seen if len(seen) <= 300 else f"{seen[:300]}... ({len(seen)} characters)"
    out = Outcome(cls, case, f"{seen} (rc {r.returncode})", one, "Traceback" in r.stderr, loss)
    OUTCOMES.append(out)
    print(f"- [{cls}] {case}\n    sees: {out.seen}\n    one line: {one}, traceback: {out.traceback}, "
          f"data loss: {loss or '-'}", flush=True)
    return out


def tree(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (links are not followed)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def changed(before: dict[str, str], after: dict[str, str], allowed: tuple[str, ...] = ()) -> list[str]:
    """Paths of `before` changed or deleted, and new paths not under an `allowed` prefix."""
    out = [p for p, h in before.items() if after.get(p) != h]
    return out + [p for p in after if p not in before and not p.startswith(allowed)]


def non_finite(paths) -> list[str]:
    """Those of `paths` (torch files) that exist and hold a NaN/inf tensor anywhere."""
    import torch

    def bad(obj) -> bool:
        if torch.is_tensor(obj):
            return obj.is_floating_point() and not bool(torch.isfinite(obj).all())
        if isinstance(obj, dict):
            return any(bad(v) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return any(bad(v) for v in obj)
        return False

    return [p.name for p in map(Path, paths) if p.is_file() and bad(torch.load(p, weights_only=True))]


def script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(PROGRAMS / name), *args]


def stage2(prog: Path, run_name: str, *extra: str) -> list[str]:
    return script("train_encoders_and_decoders.py", "--run_name", run_name, "--generate_data", "0", "--programs_dir",
                  str(prog), "--train_data_rounds", "8", "--val_data_rounds", "4", "--testing_data_rounds", "4",
                  "--VSA_dim", "64", "--max_digits", "4", "--device", "cpu", "--training_epochs", "3",
                  "--decoding_epochs", "3", *extra)


def csv_with(path: Path, question: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(f"problem_type,x,y,question,solution\ngcd,12,8,{question},4\n".encode(encoding))
    return path


# ----------------------------------------------------------------------------- the classes
def lock_links(work: Path, ckpt: Path, maps: Path) -> None:
    for stage, cmd in (("gather_hidden_states", lambda p: stage1(ckpt, p, "--train_data_rounds", "4")),
                       ("fine_tune_decoders", lambda p: stage3(ckpt, maps, p, "G", "--test_baseline", "2",
                                                               "--testing_num_steps", "1"))):
        prog = work / f"lock_{stage}"
        (prog / "results" / "G").mkdir(parents=True)
        target = work / f"precious_{stage}.txt"
        target.write_text("a file the lock's link points at\n")
        (prog / "results" / "G" / f".{stage}.lock").symlink_to(target)
        r = run(cmd(prog))
        kept = target.read_text() == "a file the lock's link points at\n"
        judge(1, f"{stage}: the lock file is a symbolic link to another file", r,
              "" if kept else f"the link's target now holds {target.read_text()!r}")
    prog = work / "lock_dangling"
    (prog / "results" / "G").mkdir(parents=True)
    target = work / "created_through_link.txt"
    (prog / "results" / "G" / ".fine_tune_decoders.lock").symlink_to(target)
    r = run(stage3(ckpt, maps, prog, "G", "--test_baseline", "2", "--testing_num_steps", "1"))
    judge(1, "fine_tune_decoders: the lock file is a dangling link", r,
          f"{target.name} created outside --programs_dir" if target.exists() else "")


def reshard_cases(work: Path, ckpt: Path) -> None:
    for case, files in (("a models folder (two runs' maps and a shard)",
                         ("encoders_R.pth", "decoders_R.pth", "consolidated.00.pth")),
                        ("a folder of a user's files", ("notes.pth", "README.txt"))):
        dst = work / f"reshard_{len(files)}"
        dst.mkdir()
        for name in files:
            (dst / name).write_bytes(f"{name} of the user".encode())
        before = tree(dst)
        r = run(script("reshard_checkpoint.py", str(ckpt), str(dst), "--model_parallel_size", "1"))
        lost = [p for p in changed(before, tree(dst)) if p in before]
        judge(2, f"reshard_checkpoint.py into {case}", r, f"deleted or changed: {lost}" if lost else "")


def run_names(work: Path, ckpt: Path, maps: Path, store: Path) -> None:
    base = work / "names"
    prog = base / "prog"
    other = base / "other_model"
    other.mkdir(parents=True)
    (other / "consolidated.00.pth").write_bytes(b"another model's shard")
    shutil.copytree(maps, prog / "models")
    cases = [
        ("stage 2 --run_name 'x/../../../other_model/consolidated.00'",
         stage2(prog, "x/../../../other_model/consolidated.00", "--gathered_data_dir", str(store))),
        ("stage 1 --run_name '../../x'", stage1(ckpt, prog, "--train_data_rounds", "4")[:3] + ["../../x"]
         + stage1(ckpt, prog, "--train_data_rounds", "4")[4:]),
        *[(f"stage 3 --run_name {name!r}", stage3(ckpt, prog / "models", prog, name, "--test_baseline", "2",
                                                  "--testing_num_steps", "1"))
          for name in ("../x", str(base / "abs_run"), "a/b")],
        ("compare_runs.py '../x' 'y'", script("compare_runs.py", "../x", "y", "--programs_dir", str(prog))),
    ]
    for case, cmd in cases:
        before = tree(base)
        r = run(cmd)
        outside = [p for p in changed(before, tree(base)) if not p.startswith("prog/")]
        judge(3, case, r, f"outside --programs_dir: {outside}" if outside else "")
        shutil.rmtree(prog / "results", ignore_errors=True)


def non_finite_cases(work: Path, ckpt: Path, maps: Path, store: Path) -> None:
    import torch

    prog = work / "nan"
    shutil.copytree(maps, prog / "models")
    models = prog / "models"
    written = lambda run_name: [models / f"{k}_{run_name}.pth" for k in ("encoders", "decoders")]  # noqa: E731
    r = run(stage2(prog, "N1", "--ridge", "nan", "--gathered_data_dir", str(store)))
    bad = non_finite(written("N1"))
    judge(4, "stage 2 --ridge nan", r, f"NaN maps written: {bad}" if bad else "")
    poisoned = work / "nan_store"
    shutil.copytree(store, poisoned)
    shard = poisoned / "train" / "shard_00000.pt"
    data = torch.load(shard, weights_only=True)
    data["hidden"][0] = float("nan")
    torch.save(data, shard)
    r = run(stage2(prog, "N2", "--gathered_data_dir", str(poisoned)))
    bad = non_finite(written("N2"))
    judge(4, "stage 2 on a gathered shard of NaN", r, f"NaN maps written: {bad}" if bad else "")
    out = models / "decoders_m_post_fine_tuning_N3.pth"
    r = run(stage3(ckpt, models, prog, "N3", "--learning_rate", "inf", "--num_steps", "4"))
    bad = non_finite([out, prog / "results" / "N3" / "training_state.pt"])
    judge(4, "stage 3 --learning_rate inf", r, f"non-finite files written: {bad}" if bad else "")
    out = models / "decoders_m_post_fine_tuning_N4.pth"
    first = run(stage3(ckpt, models, prog, "N4", "--num_steps", "4"))
    state = prog / "results" / "N4" / "training_state.pt"
    if first.returncode != 0 or not state.is_file():
        print(f"  (could not make a training state: {first.stderr[-500:]})")
        return
    saved = torch.load(state, weights_only=True)
    saved["params"] = [torch.full_like(p, float("nan")) for p in saved["params"]]
    torch.save(saved, state)
    out.unlink(missing_ok=True)
    r = run(stage3(ckpt, models, prog, "N4", "--num_steps", "4"))
    bad = non_finite([out])
    judge(4, "stage 3 resumed from a training state of NaN parameters", r,
          f"non-finite files written: {bad}" if bad else "")


def bad_files(work: Path, ckpt: Path, maps: Path, store: Path) -> None:
    import torch

    base = work / "files"
    base.mkdir()
    for case, question, enc in (("a 5,000-digit number", "What is the GCD of 12 and " + "7" * 5000 + "?", "utf-8"),
                                ("Latin-1 text", "Quel est le PGCD de 12 et 8, déjà?", "latin-1"),
                                ("a 200,000-character field", "What is the GCD of 12 and 8? " + "x" * 200_000,
                                 "utf-8")):
        csv = csv_with(base / "q.csv", question, enc)
        r = run(stage1(ckpt, base / "prog1", "--training_data_df_path", str(csv)))
        judge(6, f"stage 1: a training CSV with {case} in a question", r, names="q.csv")
    yaml_file = base / "latin1.yaml"
    yaml_file.write_bytes("run_name: caf\xe9\n".encode("latin-1"))
    r = run(stage3(ckpt, maps, base / "prog3", "Y", "--config", str(yaml_file)))
    judge(6, "stage 3: a --config YAML that is not UTF-8", r, names="latin1.yaml")
    for case, edit in (("without its 'engine' key", lambda d: d.pop("engine")),
                       ("whose weights key is 'two'", lambda d: d.update(weights={"two": d["weights"]["2"]}))):
        odd = base / "odd_maps"
        shutil.copytree(maps, odd, dirs_exist_ok=True)
        data = torch.load(odd / "encoders_m.pth", weights_only=True)
        edit(data)
        torch.save(data, odd / "encoders_m.pth")
        r = run(stage3(ckpt, odd, base / "prog3", "M"))
        judge(6, f"stage 3: an encoder file {case}", r, names="encoders_m.pth")
    for case, corrupt, names in (("a manifest.json of []", lambda s: (s / "manifest.json").write_text("[]"),
                                  "manifest.json"),
                          ("a manifest.json without 'layers'", lambda s: (s / "manifest.json").write_text(json.dumps(
                              {k: v for k, v in json.loads((s / "manifest.json").read_text()).items() if k != "layers"})),
                           "manifest.json"),
                          ("a shard that is not a tensor file",
                           lambda s: (s / "val" / "shard_00000.pt").write_text("hello"), "shard_00000.pt"),
                          ("a truncated shard", lambda s: (s / "val" / "shard_00000.pt").write_bytes(
                              (s / "val" / "shard_00000.pt").read_bytes()[:500]), "shard_00000.pt")):
        broken = base / "broken_store"
        shutil.rmtree(broken, ignore_errors=True)
        shutil.copytree(store, broken)
        corrupt(broken)
        r = run(stage2(base / "prog2", "S", "--gathered_data_dir", str(broken)))
        judge(6, f"stage 2: {case}", r, names=names)
    cmp = base / "cmp"
    for name in ("A", "B"):
        (cmp / "results" / name).mkdir(parents=True)
        (cmp / "results" / name / "results.csv").write_text(
            "method,problem_type,seen,n,accuracy,cross_entropy\nbaseline,gcd,True,4,0.5,1.5\n")
        (cmp / "results" / name / "fingerprints.json").write_text(json.dumps(
            {"test_rows": "r", "n_test_rows": 4, "test_questions": {}, "model": "m", "codebook": None,
             "seen_types": ["gcd"]}))
    for case, corrupt, names in (("a results.csv whose accuracy is 'lots'", lambda d: (d / "results.csv").write_text(
                                     "method,problem_type,seen,n,accuracy,cross_entropy\nbaseline,gcd,True,4,lots,1.5\n"),
                                  "results.csv"),
                                 ("a fingerprints.json that is not JSON",
                                  lambda d: (d / "fingerprints.json").write_text("{"), "fingerprints.json")):
        keep = {p: p.read_bytes() for p in (cmp / "results" / "B").iterdir()}
        corrupt(cmp / "results" / "B")
        r = run(script("compare_runs.py", "A", "B", "--programs_dir", str(cmp)))
        out = cmp / "results" / "compare_A_B"
        judge(6, f"compare_runs.py: {case}", r, f"output folder left with {sorted(tree(out))}" if out.exists() else "",
              names=names)
        shutil.rmtree(out, ignore_errors=True)
        for p, b in keep.items():
            p.write_bytes(b)
    # a first attempt that crashes on its first shard (a question too long for --max_seq_len), then the repaired CSV
    from neurosymbolic_llm.symbolic.problems import generate_problems

    df = generate_problems(4, ["gcd", "modulo"], seed=1)
    csv = base / "train.csv"
    long = df.copy()
    long.loc[0, "question"] += " Think about it." * 150
    long.to_csv(csv, index=False)
    cmd = stage1(ckpt, base / "prog_crash", "--training_data_df_path", str(csv), "--max_seq_len", "512")
    r = run(cmd)
    df.to_csv(csv, index=False)
    rerun = run(cmd)
    judge(6, "stage 1 crashes on its first shard, then the repaired CSV is rerun", r,
          rerun_ok=rerun.returncode == 0)
    if rerun.returncode != 0:
        print(f"    the rerun: {rerun.stderr.strip().splitlines()[-1] if rerun.stderr.strip() else rerun.returncode}")


def echoes(work: Path, ckpt: Path, maps: Path) -> None:
    bomb = work / "bomb.yaml"  # a million strings in one option's value once its aliases are expanded
    nested = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    nested += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 6)]
    bomb.write_text(f"problem_type: [{', '.join(nested)}]\n")
    r = run(stage3(ckpt, maps, work / "bomb_prog", "B", "--config", str(bomb)))
    judge(7, f"stage 3: a {bomb.stat().st_size}-byte 'billion laughs' YAML config", r)
    r = run(stage3(ckpt, maps, work / "bomb_prog", "B", "--testing_problems", "gcd" * 30_000))
    judge(7, "stage 3: a 90,000-character --testing_problems", r)


def maps_replaced(work: Path, ckpt: Path, maps: Path) -> None:
    import torch

    from neurosymbolic_llm.pipeline.maps import load_maps, save_maps

    prog = work / "replaced"
    shutil.copytree(maps, prog / "models")
    models = prog / "models"
    dec = load_maps(models / "decoders_m.pth", "decoder")
    state = prog / "results" / "R" / "training_state.pt"
    p = subprocess.Popen(stage3(ckpt, models, prog, "R", "--num_steps", "100", "--checkpoint_every", "5"),
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not state.exists() and p.poll() is None:
        time.sleep(0.01)
    other = {layer: torch.randn_like(w) for layer, w in dec.weights.items()}
    save_maps(models / "decoders_m.pth", "decoder", other, dec.engine_state, dec.model_info)  # stage 2 rerun
    out, err = p.communicate(timeout=900)
    r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    saved = models / "decoders_m_post_fine_tuning_R.pth"
    judge(8, "stage 2 replaces the decoder file while stage 3 trains on it", r,
          "a fine-tuned decoder saved that names a file holding other maps" if saved.exists() else "")


def table() -> str:
    rows = ["| # | class | tried | one line | traceback | data loss |", "|---|---|---|---|---|---|"]
    for cls, title in CLASSES.items():
        mine = [o for o in OUTCOMES if o.cls == cls]
        if mine:
            rows.append(f"| {cls} | {title} | {len(mine)} | {sum(o.one_line for o in mine)} | "
                        f"{sum(o.traceback for o in mine)} | {sum(bool(o.loss) for o in mine)} |")
    total = OUTCOMES
    rows.append(f"| | all | {len(total)} | {sum(o.one_line for o in total)} | {sum(o.traceback for o in total)} | "
                f"{sum(bool(o.loss) for o in total)} |")
    return "\n".join(rows)


def run_all(work: Path, ckpt: Path, maps: Path) -> str:
    """Every class; returns the Markdown table of counts per class."""
    work.mkdir(parents=True, exist_ok=True)
    store_prog = work / "store"
    done = run(stage1(ckpt, store_prog, "--train_data_rounds", "8"))
    assert done.returncode == 0, done.stderr[-2000:]
    store = store_prog / "gathered_data_G"
    lock_links(work, ckpt, maps)
    reshard_cases(work, ckpt)
    run_names(work, ckpt, maps, store)
    non_finite_cases(work, ckpt, maps, store)
    bad_files(work, ckpt, maps, store)
    echoes(work, ckpt, maps)
    maps_replaced(work, ckpt, maps)
    return table()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(ROOT / "src"), help="the package source the scripts run with")
    ap.add_argument("--keep", default="", help="work in this folder and keep it (default: a temporary one)")
    a = ap.parse_args(argv)
    harness.use_source(a.src)
    work = harness.work_folder(a.keep, "nsllm_hostile_")
    print(f"\n{run_all(work, *harness.setup(work))}\n\nsource: {a.src}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
