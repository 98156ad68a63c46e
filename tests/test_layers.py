"""The packages stand on each other in one order, and no import runs upward:

    shm <- exchange <- gateway <- daemon <- tools <- bench

``shm``: rings and counters; ``exchange``: the shard (books, journal, engine);
``gateway``: the gateway process and the client library; ``daemon``: the processes'
orchestration (supervisor, roles, status, metrics, ``exchanged``); ``tools``:
``exch``; ``bench``: the benchmarks. Every import is counted, those inside
functions too: a lazy import upward is still a lower layer knowing a higher one.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("shm", "exchange", "gateway", "daemon", "tools", "bench")


def _imports(path: Path) -> set[str]:
    """The top-level packages a module imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_no_import_runs_from_a_lower_package_up_into_a_higher_one():
    upward = []
    for rank, package in enumerate(LAYERS):
        modules = sorted((REPO / package).rglob("*.py"))
        assert modules, package
        for path in modules:
            for imported in _imports(path) & set(LAYERS):
                if LAYERS.index(imported) > rank:
                    upward.append(f"{path.relative_to(REPO)} imports {imported}")
    assert upward == []


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from gateway import server\n    import tools.cli\n")
    assert _imports(module) == {"gateway", "tools"}
