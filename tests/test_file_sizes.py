"""Small files (the project's style rule): no source, test, benchmark or document of the repository
over 450 lines; a longer one is split by concept (docs/ARCHITECTURE.md names where each part lives)."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 450
KINDS = (".py", ".md", ".sh", ".yaml", ".yml", ".toml")


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return [ROOT / line for line in out.splitlines()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked sdist)
        return [p for p in ROOT.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts]


def test_no_file_over_450_lines():
    files = [p for p in _tracked_files() if p.suffix in KINDS and p.is_file()]
    assert len(files) > 100
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text(errors="replace").splitlines())) > LIMIT}
    assert long == {}, f"split these by concept: {long}"
