"""Nothing lost, nothing mixed: stage 3 under kill -9, Ctrl-C and SIGTERM, read-only and full output
folders, two processes on one run, and compare_runs on runs that do not compare. Real processes of
the entry scripts on the tiny random checkpoint.

Full and read-only folders are real: a small tmpfs mounted in a private mount namespace
(`unshare --user --map-root-user --mount`). Where the machine does not allow that, the full folder
is simulated (the free space the check sees) and the read-only one made by chmod (not for root).
"""
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from neurosymbolic_llm.pipeline.configs import FineTuneConfig
from neurosymbolic_llm.pipeline.errors import ConfigError, OutputError, RunLockedError
from neurosymbolic_llm.stages.fine_tune import run
from neurosymbolic_llm.pipeline.locks import stage_lock
from neurosymbolic_llm.pipeline.maps import load_maps, model_info, save_maps
from neurosymbolic_llm.pipeline.options import parse_config
from neurosymbolic_llm.pipeline.results import headline_ratios, read_results
from neurosymbolic_llm.symbolic.engine import SymbolicEngine
from neurosymbolic_llm.symbolic.problems import generate_problems

PROGRAMS = Path(__file__).resolve().parents[1] / "Programs"
ENV = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
STEPS = 60


def write_maps(folder: Path, ckpt: Path) -> tuple[Path, Path]:
    from neurosymbolic_llm.llama.checkpoint import checkpoint_fingerprint

    engine = SymbolicEngine(VSA_dim=64, max_digits=4, seed=4)
    info = model_info(checkpoint_fingerprint(ckpt), 64, 4)
    g = torch.Generator().manual_seed(0)
    enc = save_maps(folder / "encoders_m.pth", "encoder", {2: torch.randn(64, 64, generator=g) / 8},
                    engine.state_dict(), info)
    dec = save_maps(folder / "decoders_m.pth", "decoder", {2: torch.randn(64, 64, generator=g) / 8},
                    engine.state_dict(), info)
    return enc, dec


def stage3_args(ckpt, programs: Path, run_name="R", *extra, maps: Path = None) -> list[str]:
    """A short neurosymbolic run on random problems; its maps are written to <programs>/models, so
    the fine-tuned decoder of each programs folder is its own (or read from the folder `maps`)."""
    if maps is None:
        maps = programs / "models"
        if not (maps / "decoders_m.pth").exists():
            write_maps(maps, ckpt)
    return ["--run_name", run_name, "--chpt_dir", str(ckpt), "--programs_dir", str(programs),
            "--encoder_path", str(maps / "encoders_m.pth"), "--decoder_path", str(maps / "decoders_m.pth"),
            "--symbolic_encoding_layer", "2", "--symbolic_decoding_layers", "2", "--problem_type", "gcd,modulo",
            "--testing_problems", "gcd,modulo", "--num_steps", str(STEPS), "--n_samples", "2",
            "--validation_rows", "2", "--testing_num_steps", "1", "--testing_n_samples", "2", "--eval_batch_size", "4",
            "--max_seq_len", "512", "--problem_score_threshold", "-100", "--checkpoint_every", "1",
            "--learning_rate", "0.01", "--device", "cpu", *extra]


def script(name: str) -> list[str]:
    return [sys.executable, str(PROGRAMS / name)]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(script("fine_tune_decoders.py") + args, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_until(cond, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (code {proc.returncode}) first: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.005)


def saved_step(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["step"])


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def outputs(programs: Path, run_name="R"):
    out = programs / "results" / run_name
    decoder = load_maps(programs / "models" / f"decoders_m_post_fine_tuning_{run_name}.pth", "decoder")
    return decoder.weights[2], pd.read_csv(out / "results.csv"), pd.read_csv(out / "responses.csv")


# ----------------------------------------------------------------------------- interruptions
@pytest.mark.slow
def test_kill_9_and_ctrl_c_resume_to_the_uninterrupted_result(tiny_ckpt, tmp_path):
    ref = tmp_path / "ref"
    assert run(parse_config(FineTuneConfig, stage3_args(tiny_ckpt, ref))) == 0  # uninterrupted, same seed

    prog = tmp_path / "interrupted"
    args = stage3_args(tiny_ckpt, prog)
    state = prog / "results" / "R" / "training_state.pt"
    # 1. kill -9 after the first saved state
    p = start(args)
    wait_until(state.exists, p)
    p.kill()
    p.wait()
    killed_at = saved_step(state)
    assert 1 <= killed_at < STEPS
    assert not list(prog.rglob(".*.tmp*"))  # no half-written file

    # 2. resumed (the dead process left no stuck lock), then Ctrl-C: exit 130, one line saying where the state is
    p = start(args)
    m0 = state.stat().st_mtime_ns
    wait_until(lambda: state.stat().st_mtime_ns != m0, p)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 130, err[-2000:]
    assert f"resuming neurosymbolic training from {state} (step {killed_at} of {STEPS})" in out
    assert "Traceback" not in err
    m = re.fullmatch(rf"Ctrl-C: neurosymbolic training state after step (\d+) saved in {re.escape(str(state))}; "
                     r"rerun the same command to resume", last_line(err))
    assert m, last_line(err)
    int_at = int(m.group(1))
    assert killed_at < int_at < STEPS and saved_step(state) == int_at

    # 3. resumed to the end: the decoder and every result equal the uninterrupted run's
    done = subprocess.run(script("fine_tune_decoders.py") + args, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"(step {int_at} of {STEPS})" in done.stdout
    (w_ref, res_ref, resp_ref), (w, res, resp) = outputs(ref), outputs(prog)
    assert torch.equal(w, w_ref)
    pd.testing.assert_frame_equal(res, res_ref)
    pd.testing.assert_frame_equal(resp, resp_ref)
    log = torch.load(state, weights_only=True)["log"]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))  # one record per step, none twice

    # 4. the state is never continued with other settings, and the refused attempt records nothing
    record = (prog / "results" / "R" / "config_fine_tune.yaml").read_text()
    with pytest.raises(ConfigError, match=re.escape(
            f"{state}: the saved training state of this run was made with other settings (options.learning_rate: "
            f"0.01 there, 0.02 now); rerun with --restart 1 to start over, or use another --run_name")):
        run(parse_config(FineTuneConfig, args + ["--learning_rate", "0.02"]))
    assert (prog / "results" / "R" / "config_fine_tune.yaml").read_text() == record


@pytest.mark.slow
def test_second_process_on_the_same_run_and_stage_is_refused(tiny_ckpt, tmp_path):
    train = tmp_path / "train.csv"  # 2 steps per epoch, as many epochs as it takes to be stopped
    generate_problems(4, ["gcd", "modulo"], seed=3).to_csv(train, index=False)
    args = stage3_args(tiny_ckpt, tmp_path, "R", "--training_data_df_path", str(train), "--num_epochs", "100000")
    state = tmp_path / "results" / "R" / "training_state.pt"
    first = start(args)
    try:
        wait_until(state.exists, first)
        second = subprocess.run(script("fine_tune_decoders.py") + args, env=ENV, capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 2
        assert second.stderr.strip() == (
            f"error: run 'R': fine_tune_decoders is already running in process {first.pid} "
            f"(lock {tmp_path / 'results' / 'R' / '.fine_tune_decoders.lock'}); wait for it to finish, stop it, "
            f"or use another --run_name")
        assert first.poll() is None  # the first one goes on
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=300)
    # SIGTERM: like Ctrl-C, the step ends, the state is saved, one line, exit 143
    assert first.returncode == 143 and "Traceback" not in err
    m = re.fullmatch(rf"SIGTERM: neurosymbolic training state after step (\d+) saved in {re.escape(str(state))}; "
                     r"rerun the same command to resume", last_line(err))
    assert m and saved_step(state) == int(m.group(1)), last_line(err)
    with stage_lock(tmp_path / "results" / "R", "fine_tune_decoders", "R"):  # released with its process
        pass


def test_lock_names_the_holder_and_dies_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from neurosymbolic_llm.pipeline.locks import stage_lock\n"
        "with stage_lock(sys.argv[1], 'stage_x', 'R'):\n    print('locked', flush=True); time.sleep(600)"),
        str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunLockedError, match=rf"stage_x is already running in process {holder.pid} "):
        with stage_lock(tmp_path, "stage_x", "R"):
            pass
    with stage_lock(tmp_path, "stage_y", "R"):  # another stage of the same run is free
        pass
    holder.kill()
    holder.wait()
    with stage_lock(tmp_path, "stage_x", "R") as path:  # kill -9 left the lock file, not the lock
        assert path.read_text().strip() == str(os.getpid())


# ----------------------------------------------------------------------------- read-only and full folders
def _namespaces_work() -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                        "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d && rmdir $d"],
                       capture_output=True)
    return r.returncode == 0


NAMESPACES = _namespaces_work()


def in_namespace(setup: str, cmd: list[str], after: str = "") -> subprocess.CompletedProcess:
    """Run `setup` (shell: mounts), then `cmd`, then `after` in a private mount namespace."""
    line = " ".join(shlex.quote(c) for c in cmd)
    sh = f"set -e; {setup}; set +e; {line}; echo \"rc=$?\"; {after}"
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", sh], env=ENV,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_read_only_decoder_folder_fails_before_the_model_loads(tiny_ckpt, tmp_path):
    """Stage 3 writes the fine-tuned decoder beside --decoder_path: a read-only maps folder is an
    error before anything is loaded or trained, not after hours of training."""
    maps = tmp_path / "maps"
    write_maps(tmp_path / "staging", tiny_ckpt)
    args = stage3_args(tiny_ckpt, tmp_path / "prog", maps=maps)
    if NAMESPACES:
        maps.mkdir()
        res = in_namespace(f"mount -t tmpfs -o size=4m tmpfs {maps}; cp {tmp_path}/staging/*.pth {maps}; "
                           f"mount -o remount,ro {maps}", script("fine_tune_decoders.py") + args)
        rc = int(re.search(r"rc=(\d+)", res.stdout).group(1))
        reason = "Read-only file system"
    elif os.geteuid() != 0:
        shutil.copytree(tmp_path / "staging", maps)
        maps.chmod(0o555)
        res = subprocess.run(script("fine_tune_decoders.py") + args, env=ENV, capture_output=True, text=True)
        rc, reason = res.returncode, "Permission denied"
    else:
        pytest.skip("root without mount namespaces: no way to make a folder read-only")
    assert rc == 2
    assert res.stderr.strip() == (f"error: {maps}: cannot write the fine-tuned decoder there ({reason}); "
                                  f"nothing was started")
    run_dir = tmp_path / "prog" / "results" / "R"
    assert sorted(p.name for p in run_dir.iterdir()) == [".fine_tune_decoders.lock"]  # no state, no results


@pytest.mark.slow
def test_full_output_folder_fails_before_training_and_a_full_write_keeps_the_old_file(tiny_ckpt, tmp_path):
    prog = tmp_path / "prog"
    prog.mkdir()
    if not NAMESPACES:  # simulated: the check sees 100 kB free
        import neurosymbolic_llm.pipeline.files as files

        usage = shutil.disk_usage(tmp_path)
        real = files.shutil.disk_usage
        files.shutil.disk_usage = lambda p: usage._replace(free=100_000)
        try:
            with pytest.raises(OutputError, match=r"0.1 MiB free, the results and the training state need about"):
                run(parse_config(FineTuneConfig, stage3_args(tiny_ckpt, prog)))
        finally:
            files.shutil.disk_usage = real
        pytest.skip("no mount namespaces: the full folder was simulated, the write failure is not tested")
    write_maps(tmp_path / "maps", tiny_ckpt)
    args = stage3_args(tiny_ckpt, prog, maps=tmp_path / "maps")
    res = in_namespace(f"mount -t tmpfs -o size=512k tmpfs {prog}", script("fine_tune_decoders.py") + args,
                       after=f"find {prog} -type f")
    assert "rc=2" in res.stdout, res.stderr[-2000:]
    assert re.fullmatch(rf"error: {re.escape(str(prog / 'results' / 'R'))}: 0\.\d MiB free, the results and the "
                        r"training state need about 1\.\d MiB; free some space or choose another folder; nothing "
                        r"was started", res.stderr.strip()), res.stderr
    left = res.stdout.split("rc=2")[1].split()
    assert left == [str(prog / "results" / "R" / ".fine_tune_decoders.lock")]  # nothing half-written

    # a write that meets a full disk: one line naming the file, its previous version intact
    snippet = (
        "import sys, torch\n"
        "from neurosymbolic_llm.pipeline.files import atomic_torch_save\n"
        "from neurosymbolic_llm.pipeline.errors import OutputError\n"
        "atomic_torch_save({'step': 1, 'w': torch.zeros(1000)}, sys.argv[1] + '/state.pt', what='the state')\n"
        "try:\n"
        "    atomic_torch_save({'step': 2, 'w': torch.zeros(100000)}, sys.argv[1] + '/state.pt', what='the state')\n"
        "except OutputError as e:\n"
        "    print('ERROR', e)\n"
        "print('STEP', torch.load(sys.argv[1] + '/state.pt')['step'])\n")
    full = tmp_path / "full"
    full.mkdir()
    res = in_namespace(f"mount -t tmpfs -o size=64k tmpfs {full}", [sys.executable, "-c", snippet, str(full)], after=f"ls -A {full}")
    assert f"ERROR cannot write the state {full}/state.pt: No space left on device; its previous version is kept" \
        in res.stdout, res.stdout + res.stderr
    assert "STEP 1" in res.stdout and res.stdout.split("rc=0")[1].split() == ["state.pt"]


# ----------------------------------------------------------------------------- results that compare
@pytest.mark.slow
def test_compare_runs_refuses_other_test_rows_and_identical_methods_give_one(tiny_ckpt, tmp_path, monkeypatch):
    from neurosymbolic_llm.llama.generation import Llama

    lengths = []
    real_generate = Llama.generate

    def counting(self, prompts, max_gen_len, *a, **k):  # the real generation, its output lengths recorded
        out = real_generate(self, prompts, max_gen_len, *a, **k)
        lengths.extend(len(o) for o in out)
        return out

    monkeypatch.setattr(Llama, "generate", counting)
    for name, seed in (("A", 1), ("B", 2)):
        df = pd.concat([generate_problems(3, [t], seed=seed + i) for i, t in enumerate(("gcd", "modulo"))])
        df.to_csv(tmp_path / f"{name}.csv", index=False)
        args = stage3_args(tiny_ckpt, tmp_path, name, "--test_baseline", "2", "--testing_data_df_path",
                           str(tmp_path / f"{name}.csv"))
        assert run(parse_config(FineTuneConfig, args)) == 0
    assert max(lengths) == 8  # the paper's budget: generation stops after complexity + 6 new tokens
    res = subprocess.run(script("compare_runs.py") + ["A", "B", "--programs_dir", str(tmp_path)], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert re.fullmatch(r"error: runs A, B do not compare: different test rows \(A: \w+ \(6 rows\), B: \w+ "
                        r"\(6 rows\)\); rerun them on the same rows and maps, or pass --allow_mismatch to merge "
                        r"anyway", res.stderr.strip()), res.stderr
    res = subprocess.run(script("compare_runs.py") + ["A", "B", "--programs_dir", str(tmp_path), "--allow_mismatch"],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0
    assert res.stderr.strip().startswith("warning: merged despite different test rows (A: ")
    # identical methods: the neurosymbolic model with a gate that never opens is the plain model
    args = stage3_args(tiny_ckpt, tmp_path, "C", "--test_baseline", "1", "--testing_data_df_path",
                       str(tmp_path / "A.csv"), "--problem_score_threshold", "1e9", "--num_steps", "1")
    assert run(parse_config(FineTuneConfig, args)) == 0
    results = read_results(tmp_path / "results" / "C" / "results.csv")
    assert (results["accuracy"] == 0).any()  # a type both fail is part of it
    assert headline_ratios(results)["times_more_solved_vs_baseline"] == 1.0
    assert "times_more_solved_vs_baseline: 1.00" in (tmp_path / "results" / "C" / "results.md").read_text()
    res = subprocess.run(script("compare_runs.py") + ["A", "C", "--programs_dir", str(tmp_path)], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr  # same rows, model; only C has a codebook


# ----------------------------------------------------------------------------- one line for every OS error
def test_os_errors_become_one_line_and_exit_code_2(tmp_path, capsys):
    from neurosymbolic_llm.pipeline.errors import run_entry_point
    from neurosymbolic_llm.pipeline.files import atomic_write_text

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=rf"cannot write the results {re.escape(str(blocker))}/r.md: "
                                          rf"{re.escape(str(blocker))} is a file, not a folder; no partial file is left"):
        atomic_write_text(blocker / "r.md", "text", what="the results")

    def main(argv):
        open(tmp_path / "missing" / "x.csv")

    assert run_entry_point(main) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing' / 'x.csv'}: No such file or directory\n"


def test_a_blocked_run_folder_is_one_line_naming_the_lock(tmp_path):
    (tmp_path / "results").write_text("a file where the results folder should be")
    lock = re.escape(str(tmp_path / "results" / "R" / ".stage_x.lock"))
    with pytest.raises(OutputError, match=rf"{lock}: cannot write the lock file of run 'R' "
                                          rf"\({re.escape(str(tmp_path / 'results'))} is a file, not a folder\); nothing "
                                          r"was started"):
        with stage_lock(tmp_path / "results" / "R", "stage_x", "R"):
            pass
