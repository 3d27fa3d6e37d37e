"""Fault injection: every fault and bad input of issue 13 tried on the entry scripts, with what the user
sees and what is kept, then the hostile inputs of issue 19 by class (benchmarks/hostile_inputs.py, run
as its own process: tried / one line / traceback / data loss; issue 30's are benchmarks/hostile_round2.py). Prints Markdown tables (benchmarks/RESULTS.md keeps the
last ones).

    python benchmarks/faults.py [--keep DIR]

A tiny random Llama (Meta layout, real tokenizer) and random stage-2 maps are built in a temporary
folder; every scenario runs the real entry scripts as processes. Full and read-only folders are small
tmpfs mounts in a private mount namespace (`unshare --user --map-root-user --mount`); without
that, those rows say so. About 10 minutes on 2 busy CPU cores (14 on a shared, loaded one).
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import ENV, PROGRAMS, setup, stage1, stage3, work_folder

ROWS: list[tuple[str, str, str]] = []


def last(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def short(text: str, work: Path) -> str:
    return text.replace(str(work), "…").replace("|", "\\|")


def record(fault: str, seen: str, kept: str) -> None:
    ROWS.append((fault, seen, kept))
    print(f"- {fault}\n    sees: {seen}\n    kept: {kept}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900, **kw)


def interrupt(cmd: list[str], ready, sig, twice: bool = False) -> subprocess.CompletedProcess:
    """Start `cmd`, wait until `ready()` (polled every 5 ms), send `sig` (twice: two in a row)."""
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not ready() and p.poll() is None:
        time.sleep(0.005)
    p.send_signal(sig)
    if twice:
        time.sleep(0.05)
        p.send_signal(sig)
    out, err = p.communicate(timeout=900)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def saved_step(path: Path) -> str:
    import torch

    return f"step {torch.load(path, weights_only=True)['step']}" if path.is_file() else "no state file"


def namespaces() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode == 0


def in_ns(setup_sh: str, cmd: list[str], after: str = "") -> subprocess.CompletedProcess:
    sh = f"set -e; {setup_sh}; set +e; {' '.join(shlex.quote(c) for c in cmd)}; echo \"rc=$?\"; {after}"
    return run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", sh])


def rc_of(r: subprocess.CompletedProcess) -> str:
    return r.stdout.split("rc=")[1].split()[0]


def files_after(r: subprocess.CompletedProcess, work: Path) -> list[str]:
    """The file list printed after the command in `in_ns`."""
    return [short(p, work) for p in r.stdout.split("rc=")[1].split()[1:]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", default="", help="work in this folder and keep it (default: a temporary one)")
    a = ap.parse_args(argv)
    work = work_folder(a.keep, "nsllm_faults_")
    ckpt, maps = setup(work)
    ns = namespaces()
    w = lambda text: short(text, work)  # noqa: E731

    # ---- stage 3: stopped runs
    prog = work / "s3"
    shutil.copytree(maps, prog / "models")
    pm = prog / "models"
    state = prog / "results" / "R" / "training_state.pt"
    r = interrupt(stage3(ckpt, pm, prog), state.exists, signal.SIGKILL)
    at = saved_step(state)
    m0 = state.stat().st_mtime_ns
    r2 = interrupt(stage3(ckpt, pm, prog), lambda: state.stat().st_mtime_ns != m0, signal.SIGINT)
    resumed = next((ln for ln in r2.stdout.splitlines() if ln.startswith("resuming")), "no resume line")
    record("stage 3: kill -9 during training, then the same command", f"(killed, rc {r.returncode}); rerun: "
           f"`{w(resumed)}`", f"training state of the last save ({at}; saved every --checkpoint_every steps)")
    record("stage 3: Ctrl-C during training", f"`{w(last(r2.stderr))}` (rc {r2.returncode})",
           f"training state after the finished step ({saved_step(state)})")
    m0 = state.stat().st_mtime_ns
    r3 = interrupt(stage3(ckpt, pm, prog), lambda: state.stat().st_mtime_ns != m0, signal.SIGTERM)
    record("stage 3: SIGTERM during training (a batch system's stop)", f"`{w(last(r3.stderr))}` (rc {r3.returncode})",
           f"training state after the finished step ({saved_step(state)})")
    m0 = state.stat().st_mtime_ns
    r4 = interrupt(stage3(ckpt, pm, prog), lambda: state.stat().st_mtime_ns != m0, signal.SIGINT, twice=True)
    record("stage 3: Ctrl-C twice", f"`{w(last(r4.stderr))}` (rc {r4.returncode})",
           f"the last saved training state ({saved_step(state)})")
    evaluating = prog / "models" / "decoders_m_post_fine_tuning_R.pth"
    r5 = interrupt(stage3(ckpt, pm, prog), evaluating.exists, signal.SIGINT)
    record("stage 3: Ctrl-C during the evaluation", f"`{w(last(r5.stderr))}` (rc {r5.returncode})",
           f"the finished training ({saved_step(state)}) and the fine-tuned decoder; the rerun only evaluates")
    r6 = run(stage3(ckpt, pm, prog, "R", "--learning_rate", "0.01"))
    record("stage 3: rerun of run R with another learning rate", f"`{w(last(r6.stderr))}` (rc {r6.returncode})",
           "run R's state and results untouched")
    shutil.copy(state, work / "state_backup.pt")
    state.write_bytes(state.read_bytes()[:1000])
    r7 = run(stage3(ckpt, pm, prog))
    record("stage 3: training state truncated by hand", f"`{w(last(r7.stderr))}` (rc {r7.returncode})",
           "everything else; --restart 1 replaces the state")
    shutil.copy(work / "state_backup.pt", state)
    first = subprocess.Popen(stage3(ckpt, pm, prog, "L", "--num_epochs", "1000", "--checkpoint_every", "1"), env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lstate = prog / "results" / "L" / "training_state.pt"
    while not lstate.exists() and first.poll() is None:
        time.sleep(0.01)
    r8 = run(stage3(ckpt, pm, prog, "L"))
    first.kill()
    first.wait()
    record("stage 3: a second process on the same run name (while the first trains)",
           f"`{w(last(r8.stderr))}` (rc {r8.returncode})", "the first run goes on undisturbed")

    # ---- full and read-only folders, a file in the way
    if ns:
        ro = work / "ro_maps"
        ro.mkdir()
        r = in_ns(f"mount -t tmpfs -o size=4m tmpfs {ro}; cp {maps}/*.pth {ro}; mount -o remount,ro {ro}",
                  stage3(ckpt, ro, work / "ro_prog"))
        left = sorted(str(p.relative_to(work / "ro_prog")) for p in (work / "ro_prog").rglob("*") if p.is_file())
        record("stage 3: --decoder_path in a read-only folder (the fine-tuned decoder goes beside it)",
               f"`{w(last(r.stderr))}` (rc {rc_of(r)}), before the model loads",
               f"files in --programs_dir: {left}")
        full = work / "full"
        full.mkdir()
        r = in_ns(f"mount -t tmpfs -o size=512k tmpfs {full}", stage3(ckpt, maps, full), f"find {full} -type f")
        record("stage 3: --programs_dir on a full disk (512 kB tmpfs)",
               f"`{w(last(r.stderr))}` (rc {rc_of(r)})", f"files on the disk: {files_after(r, work)}")
        snippet = ("import sys, torch; from neurosymbolic_llm.pipeline.files import atomic_torch_save\n"
                   "from neurosymbolic_llm.pipeline.errors import run_entry_point\n"
                   "atomic_torch_save({'w': torch.zeros(1000)}, sys.argv[1] + '/state.pt', what='the state')\n"
                   "run_entry_point(lambda argv: atomic_torch_save({'w': torch.zeros(100000)}, sys.argv[1] + "
                   "'/state.pt', what='the state'))\n")
        disk = work / "disk"
        disk.mkdir()
        r = in_ns(f"mount -t tmpfs -o size=64k tmpfs {disk}", [sys.executable, "-c", snippet, str(disk)],
                  f"ls -A {disk}")
        record("a write that meets a full disk (torch.save of a state, 64 kB tmpfs)",
               f"`{w(last(r.stderr))}`", f"the previous file; on disk: {r.stdout.split('rc=')[1].split()[1:]}")
        prog1 = work / "ro_s1"
        prog1.mkdir()
        r = in_ns(f"mount -t tmpfs -o size=1m,ro tmpfs {prog1}", stage1(ckpt, prog1))
        record("stage 1: read-only --programs_dir", f"`{w(last(r.stderr))}` (rc {rc_of(r)})",
               "nothing written; checked before the model loads")
        s2 = work / "s2"
        done = run(stage1(ckpt, s2, "--train_data_rounds", "8"))
        assert done.returncode == 0, done.stderr[-2000:]
        models = s2 / "models"
        models.mkdir()
        cmd = [sys.executable, str(PROGRAMS / "train_encoders_and_decoders.py"), "--run_name", "G", "--generate_data",
               "0", "--programs_dir", str(s2), "--train_data_rounds", "8", "--val_data_rounds", "4",
               "--testing_data_rounds", "4", "--VSA_dim", "64", "--max_digits", "4", "--device", "cpu"]
        r = in_ns(f"mount -t tmpfs -o size=64k tmpfs {models}", cmd, f"find {models} -type f")
        record("stage 2: models folder on a full disk (64 kB tmpfs)", f"`{w(last(r.stderr))}` (rc {rc_of(r)})",
               f"files there: {files_after(r, work)}; nothing trained")
    else:
        record("full and read-only folders", "not tried: no mount namespaces on this machine", "-")
    blocked = work / "blocked"
    blocked.mkdir()
    (blocked / "results").write_text("a file where the results folder should be")
    r = run(stage3(ckpt, maps, blocked))
    record("stage 3: a file where the results folder should be", f"`{w(last(r.stderr))}` (rc {r.returncode})",
           "the file; nothing else written")

    # ---- stage 1
    s1 = work / "s1"
    first_shard = s1 / "gathered_data_G" / "train" / "shard_00000.pt"
    r = interrupt(stage1(ckpt, s1), first_shard.exists, signal.SIGINT)
    n = len(list((s1 / "gathered_data_G" / "train").glob("shard_*.pt")))
    record("stage 1: Ctrl-C while gathering", f"`{w(last(r.stderr))}` (rc {r.returncode})",
           f"every complete shard ({n} of 100 training shards); the rerun gathers the rest")
    broken = work / "broken_ckpt"
    shutil.copytree(ckpt, broken)
    import torch

    sd = torch.load(broken / "consolidated.00.pth", weights_only=True)
    del sd["norm.weight"]
    torch.save(sd, broken / "consolidated.00.pth")
    r = run(stage1(broken, work / "s1b"))
    shutil.copy(ckpt / "consolidated.00.pth", broken / "consolidated.00.pth")
    r2 = run(stage1(broken, work / "s1b"))
    record("stage 1: checkpoint with a missing tensor, then repaired and rerun",
           f"`{w(last(r.stderr))}` (rc {r.returncode}); the rerun: rc {r2.returncode}",
           "no manifest from the failed attempt, so the repaired rerun is accepted")

    # ---- bad input
    bad = work / "bad.csv"
    bad.write_text("problem_type,x,y,question,solution\ngcd,12,8,What is the GCD of 12 and 9?,4\n")
    r = run(stage3(ckpt, maps, work / "bad", "B", "--test_baseline", "2", "--testing_data_df_path", str(bad)))
    record("a test CSV whose question does not contain its y", f"`{w(last(r.stderr))}` (rc {r.returncode})", "-")
    r = run(stage3(ckpt, maps, work / "bad", "B", "--symbolic_encoding_layer", "9", "--symbolic_decoding_layers", "9"))
    record("--symbolic_encoding_layer 9 on a 4-layer model", f"`{w(last(r.stderr))}` (rc {r.returncode})", "-")
    r = run(stage3(ckpt, maps, work / "bad", "B", "--encode_counter", "1"))
    record("--encode_counter 1 without --multi_token_intervention", f"`{w(last(r.stderr))}` (rc {r.returncode})", "-")

    # ---- results that do not compare
    cmp = work / "cmp"
    for name, seed in (("A", 1), ("C", 2)):
        from neurosymbolic_llm.symbolic.problems import generate_problems

        generate_problems(8, ["gcd", "modulo"], seed=seed).to_csv(work / f"{name}.csv", index=False)
        run(stage3(ckpt, maps, cmp, name, "--test_baseline", "2", "--testing_data_df_path", str(work / f"{name}.csv")))
    compare = [sys.executable, str(PROGRAMS / "compare_runs.py"), "A", "C", "--programs_dir", str(cmp)]
    r = run(compare)
    record("compare_runs.py on runs evaluated on different test rows", f"`{w(last(r.stderr))}` (rc {r.returncode})",
           "nothing written")
    r = run(compare + ["--allow_mismatch"])
    record("the same with --allow_mismatch", f"`{w(last(r.stderr))}` (rc {r.returncode})", "the merged table")
    shutil.copytree(cmp / "results" / "A", cmp / "results" / "old")
    (cmp / "results" / "old" / "fingerprints.json").unlink()
    r = run([sys.executable, str(PROGRAMS / "compare_runs.py"), "A", "old", "--programs_dir", str(cmp)])
    record("compare_runs.py with a run that has no fingerprints.json", f"`{w(last(r.stderr))}` (rc {r.returncode})",
           "nothing written")
    r = run(stage3(ckpt, maps, cmp, "same", "--test_baseline", "1", "--testing_data_df_path", str(work / "A.csv"),
                   "--problem_score_threshold", "1e9", "--num_steps", "1"))
    line = next((ln for ln in r.stdout.splitlines() if "times_more_solved_vs_baseline" in ln), "no ratio line")
    record("two identical methods (the gate never opens) with types both fail", f"`{line.strip()}`", "-")

    print("\n| # | fault or bad input tried | what the user sees | what is kept |\n|---|---|---|---|")
    for i, (fault, seen, kept) in enumerate(ROWS, 1):
        print(f"| {i} | {fault} | {seen} | {kept} |")
    print(f"\n{len(ROWS)} faults and bad inputs tried; work folder {work}")
    hostile = subprocess.run([sys.executable, str(Path(__file__).with_name("hostile_inputs.py")), "--keep",
                              str(work / "hostile")], env=ENV, capture_output=True, text=True, timeout=3600)
    print(f"\nhostile inputs (issue 19, benchmarks/hostile_inputs.py):\n{hostile.stdout[hostile.stdout.find('| class'):]}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
