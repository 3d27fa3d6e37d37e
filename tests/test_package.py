"""The package as a user installs it: a wheel built from this checkout, installed into a fresh
virtual environment (no network: its dependencies come from the test's own environment through a
.pth file), imported and run as console commands from a folder outside the checkout."""
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
# without tests/conftest.py's PYTHONPATH: the installed copy, not src/ (whose egg-info pip would
# also take for an installed copy)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """-> (bin folder of a fresh venv holding the wheel, a working directory outside the checkout)."""
    tmp = tmp_path_factory.mktemp("package")
    # built from a copy: setuptools builds in <source>/build/, which two xdist workers (or a user's
    # own build) would share
    source = tmp / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, source / name)
    wheels = tmp / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("neurosymbolic_llm-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                              "--no-index", str(wheel)], capture_output=True, text=True, timeout=300, env=ENV)
    assert install.returncode == 0, install.stderr[-3000:]
    # then the dependencies (torch, pandas, ...) of the environment running the tests (after the
    # install: that environment's editable copy of this package would count as installed); its
    # editable .pth file is not read from a folder added this way
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp / "work"
    work.mkdir()
    return env_dir / "bin", work


def run(args, cwd):
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def test_the_wheel_is_imported_from_the_venv(installed):
    bindir, work = installed
    proc = run([str(bindir / "python"), "-c", "import neurosymbolic_llm.stages.fine_tune as m; print(m.__file__)"],
               work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Path(proc.stdout.strip()).is_relative_to(bindir.parent), proc.stdout


def test_console_command_lists_and_runs_commands(installed):
    bindir, work = installed
    listing = run([str(bindir / "nsllm"), "--help"], work)
    assert listing.returncode == 0 and "fine-tune-decoders" in listing.stdout, listing.stdout + listing.stderr
    unknown = run([str(bindir / "nsllm"), "no-such-command"], work)
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr
    options = run([str(bindir / "nsllm"), "fine-tune-decoders", "--help"], work)
    assert options.returncode == 0 and "--encoder_path" in options.stdout, options.stderr[-2000:]
    made = run([str(bindir / "nsllm"), "make-demo-data", "--out", "splits", "--n_train", "40", "--n_val", "8",
                "--n_test", "30"], work)
    assert made.returncode == 0, made.stderr[-2000:]
    train = pd.read_csv(work / "splits" / "train.csv")
    assert len(train) == 40 and list(train.columns) == ["problem_type", "x", "y", "question", "solution"]
