"""The shape of the house: no import circles, no stage importing a stage above it, one model builder."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "demseg"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# lower numbers sit lower; a module may import its own stage and the stages below it, never a sibling
# runs (the run-folder contract) sits below predict and evaluate, which read runs but never train;
# train (the loop, presets, experiment grids, demo) sits above them and uses their scoring
RANKS = {"errors": 0, "io": 1, "cluster": 1.5, "data": 2, "lidar": 2.5, "models": 3, "runs": 3.5, "predict": 4,
         "evaluate": 5, "train": 6, "pretrain": 6, "cli_flags": 7, "qgis": 7.5, "cli": 8, "__init__": 8,
         "cli_reference": 9}
MODEL_CLASSES = {"MaeUperNet", "UNet", "SegmentationHead", "UperNetHead", "DetailHead", "ViTPyramidNeck", "MaeBackbone",
                 "build_backbone"}


def module_name(path: Path) -> str:
    return ".".join(("demseg", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")


def stage_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> set[str]:
    """Every demseg module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("demseg")}


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def test_every_stage_has_a_rank():
    assert {stage_of(m) for m in import_graph()} <= set(RANKS)


def test_no_stage_imports_a_stage_above_it_or_a_sibling():
    offences = []
    for module, deps in import_graph().items():
        stage = stage_of(module)
        for dep in deps:
            other = stage_of(dep)
            if other != stage and dep != "demseg" and RANKS[other] >= RANKS[stage]:
                offences.append(f"{module} -> {dep}")
    assert not offences, offences


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` as a list of modules (first == last), or []."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if state.get(dep) is None and (found := visit(dep, path + [dep])):
                return found
        state[node] = 2
        return []

    for module in sorted(graph):
        if state.get(module) is None and (found := visit(module, [module])):
            return found
    return []


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_there_is_no_import_cycle():
    graph = import_graph()
    # a module importing its own package's __init__ (which re-exports the package) is not a cycle
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    assert find_cycle(graph) == []


@pytest.mark.parametrize("folder", [SRC, BENCHMARKS], ids=["package", "benchmarks"])
def test_models_are_built_only_by_the_builder(folder):
    offences = []
    for path in folder.rglob("*.py"):
        if folder == SRC and path.parent.name == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in MODEL_CLASSES:
                    offences.append(f"{path.name}:{node.lineno} {name}(...)")
    assert not offences, offences
