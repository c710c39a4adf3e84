"""The package's layout (GUIDE §4): jobs above the stages, no job importing another, no two
modules importing each other. Read from the source with ``ast``, imports inside functions
included (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import faceanime

PACKAGE = Path(faceanime.__file__).resolve().parent
JOBS = ("retarget", "predict", "animate", "swap")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the faceanime modules it imports (``from faceanime.x import y`` counts as
    ``faceanime.x.y`` when that is a module, else ``faceanime.x``)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("faceanime"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.startswith("faceanime"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in modules else node.module)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_the_jobs_live_together_above_the_stages():
    graph = imports()
    for job in JOBS[:3]:
        assert f"faceanime.jobs.{job}" in graph, job
    for name, deps in graph.items():
        if name.startswith(("faceanime.jobs", "faceanime.cli")) or name in (
                "faceanime", "faceanime.__main__"):
            continue
        above = {d for d in deps if d.startswith(("faceanime.jobs", "faceanime.cli"))}
        assert not above, f"the stage {name} imports {sorted(above)}"


def test_no_job_imports_another():
    graph = imports()
    jobs = {f"faceanime.jobs.{j}" for j in JOBS}
    for job in jobs & graph.keys():
        assert not (graph[job] & jobs), f"{job} imports {sorted(graph[job] & jobs)}"


def test_no_two_modules_import_each_other():
    graph = imports()
    pairs = sorted({tuple(sorted((a, b))) for a, deps in graph.items() for b in deps
                    if a in graph.get(b, ()) and not (a.startswith(b + ".")
                                                      or b.startswith(a + "."))})
    assert not pairs, pairs
