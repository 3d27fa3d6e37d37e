"""Who may import whom inside the package (docs/ARCHITECTURE.md, "Who may import whom"), read from the source
with ast (tests/import_graph.py): the stages are peers, pipeline/ never reaches up into the stages
or the commands, llama/ stands alone."""
from pathlib import Path

import pytest

from import_graph import import_graph

SRC = Path(__file__).resolve().parents[1] / "src"

# Top-level part -> the parts it may import (besides itself). The package's own __init__ and
# __main__ are the public face and the `python -m` entry: not checked.
MAY_IMPORT = {
    "errors": set(),
    "llama": set(),
    "symbolic": {"errors"},
    "pipeline": {"errors", "llama", "symbolic"},
    "hf": {"errors", "llama", "symbolic", "pipeline"},
    "stages": {"errors", "llama", "symbolic", "pipeline"},
    "demo": {"errors", "llama", "symbolic", "pipeline"},
    "cli": {"errors", "llama", "symbolic", "pipeline", "hf", "stages", "demo"},
}


@pytest.fixture(scope="module")
def graph():
    return import_graph(SRC)


def _edges(graph):
    return [(m, t) for m, targets in sorted(graph.items()) for t, _ in sorted(targets)]


def test_the_graph_reader_sees_known_imports(graph):
    # Independent anchors, one per import form: `from ..pipeline import tracking` (a submodule
    # by name), `from ..pipeline.errors import UserError` (a name in a module), relative
    # imports inside llama/, and an import inside a function body (lazy) in cli/.
    assert ("pipeline.tracking", False) in graph["stages.fine_tune"]
    assert ("pipeline.training", False) in graph["stages.fine_tune"]
    assert ("llama.model", False) in graph["llama.generation"]
    assert ("stages.fine_tune", True) in graph["cli.fine_tune_decoders"]
    assert len(graph) > 60


def test_no_stage_module_imports_another(graph):
    bad = [(m, t) for m, t in _edges(graph)
           if m.startswith("stages.") and t.split(".")[0] == "stages"]
    assert bad == [], f"stage modules talk through files and pipeline/, never to each other: {bad}"


def test_pipeline_never_imports_stages_or_cli(graph):
    bad = [(m, t) for m, t in _edges(graph)
           if m.split(".")[0] == "pipeline" and t.split(".")[0] in ("stages", "cli", "demo")]
    assert bad == []


def test_llama_imports_nothing_else_of_the_package(graph):
    bad = [(m, t) for m, t in _edges(graph)
           if m.split(".")[0] == "llama" and t.split(".")[0] != "llama"]
    assert bad == []


def test_every_part_imports_only_the_parts_below_it(graph):
    parts = {m.split(".")[0] for m in graph if m and m != "__main__"}
    assert parts <= set(MAY_IMPORT), f"a new top-level part needs its row in MAY_IMPORT: {parts - set(MAY_IMPORT)}"
    bad = [(m, t) for m, t in _edges(graph)
           if m and m != "__main__" and t.split(".")[0] != m.split(".")[0]
           and t.split(".")[0] not in MAY_IMPORT[m.split(".")[0]]]
    assert bad == []


def test_commands_import_their_work_only_after_parsing(graph):
    # a command module imports a stage or the demo's training inside main (after argparse), so that
    # --help loads no torch (test_method_table.test_help_loads_no_torch runs it)
    eager = [(m, t) for m, targets in sorted(graph.items()) if m.startswith("cli.")
             for t, lazy in sorted(targets) if t.split(".")[0] == "stages" and not lazy]
    assert eager == []
    assert any(t.startswith("stages.") for m in graph if m.startswith("cli.") for t, _ in graph[m])
