"""bench/__init__.py's rule: the benches import one another as `bench.NAME`, never by the bare module
name a script's sys.path would also find. A bare import is invisible to .importlinter (it reads as an
outside package), so a circle through one would come back unseen."""
from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_bench_modules_import_their_siblings_through_the_package():
    siblings = {path.stem for path in BENCH.glob("*.py")} - {"__init__"}
    bare = []
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            bare += [f"{path.name}:{node.lineno} {name}" for name in names if name.split(".")[0] in siblings]
    assert siblings and bare == []
