"""`from neurosymbolic_llm import Intervention` is lazy: importing the package loads neither torch nor
transformers, and no module of the package imports transformers (it is the optional [hf] extra)."""
import ast
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def test_importing_the_package_loads_no_torch_and_intervention_no_transformers():
    code = ("import sys, neurosymbolic_llm\n"
            "assert 'torch' not in sys.modules, 'torch'\n"
            "from neurosymbolic_llm import Intervention\n"
            "assert Intervention.__module__ == 'neurosymbolic_llm.hf.api'\n"
            "assert 'transformers' not in sys.modules, 'transformers'\n"
            "try:\n    neurosymbolic_llm.Nothing\nexcept AttributeError as e:\n    print(e)\n")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "has no attribute 'Nothing'" in out.stdout


def test_no_module_imports_transformers():
    importers = []
    for path in sorted((SRC / "neurosymbolic_llm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "transformers" or n.startswith("transformers.") for n in names):
                importers.append(str(path.relative_to(SRC)))
    assert importers == []
