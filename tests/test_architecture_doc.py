"""docs/ARCHITECTURE.md stays true and short: every module, file and folder of the repository it
names exists, its import table is the one tests/test_import_rules.py enforces, and it stays a page
of contracts (300 lines at most; signatures live in docstrings)."""
import ast
import re
from pathlib import Path

from test_import_rules import MAY_IMPORT

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
PACKAGE = ROOT / "src" / "neurosymbolic_llm"
TOP = ("Programs/", "docs/", "tests/", "benchmarks/", "src/")
# a path: letters, digits, _ . - and slashes, ending in a file of the repository's kinds or a slash
PATH = re.compile(r"(?<![\w/.<{-])((?:[A-Za-z_][\w.-]*/)*[A-Za-z_][\w.-]*(?:\.py|\.md|\.sh|\.yaml|/))(?![\w<{])")


def _named_paths(text: str) -> set[str]:
    return {m.group(1) for m in PATH.finditer(text)}


def _exists(name: str) -> bool:
    """Relative to the repository root when it starts with a top-level folder, else to the package."""
    base = ROOT if name.startswith(TOP) else PACKAGE
    return (base / name).exists()


def test_every_named_path_exists():
    text = DOC.read_text()
    # output files and folders of a run (results/<run>/..., models/..., data/...) are not the repository's
    names = {n for n in _named_paths(text) if not n.startswith(("results/", "models/", "data/", "gathered_data_"))}
    assert len(names) > 60  # the reader sees the doc's module names (independent anchor below)
    assert {"pipeline/maps.py", "stages/fine_tune.py", "llama/model.py", "Programs/demo/README.md"} <= names
    missing = sorted(n for n in names if not _exists(n))
    assert missing == [], f"docs/ARCHITECTURE.md names what does not exist: {missing}"


def test_the_reader_finds_a_missing_module():
    assert not _exists("pipeline/fine_tuning.py") and _exists("pipeline/training.py")
    assert _named_paths("see pipeline/gone.py and `stages/` and Programs/x.yaml, not a.b") == {
        "pipeline/gone.py", "stages/", "Programs/x.yaml"}


def _defined(module: Path) -> set[str]:
    """Top-level names a module defines or imports (read with ast, nothing imported)."""
    names = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def test_every_named_module_attribute_exists():
    # `files.check_output_folders`, `llama.errors.shown`, `symbolic.prompts.row_rng`: the module part
    # is a module of the package (its last folder or file name), the last part a name it defines
    checked = 0
    for ref in re.findall(r"`((?:[a-z_]+\.)+[A-Za-z_]+)`", DOC.read_text()):
        *mod, name = ref.split(".")
        if name in ("py", "json", "jsonl", "csv", "md", "yaml", "safetensors", "pth", "pt"):
            continue  # a file name
        files = [f for f in PACKAGE.rglob(f"{mod[-1]}.py") if f.parent.name in ((mod[-2],) if len(mod) > 1
                                                                                 else (f.parent.name,))]
        if not files:
            continue
        checked += 1
        assert any(name in _defined(f) for f in files), f"docs/ARCHITECTURE.md: `{ref}` is not defined"
    assert checked >= 8


def test_every_package_part_is_described():
    text = DOC.read_text()
    for part in MAY_IMPORT:
        if (PACKAGE / part).is_dir():
            assert f"`{part}/`" in text, part
    for stage in sorted((PACKAGE / "stages").glob("*.py")):
        if stage.name != "__init__.py":
            assert f"stages/{stage.name}" in text, stage.name


def test_it_stays_a_page_of_contracts():
    assert len(DOC.read_text().splitlines()) <= 300
