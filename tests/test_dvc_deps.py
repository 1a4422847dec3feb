"""Every stage in dvc.yaml lists, as deps, each ferops module its script imports (transitively),
so `dvc repro` reruns a stage whenever code it runs has changed."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from tests.conftest import ROOT


def imported_modules(path: Path, seen: set[str]) -> set[str]:
    """``src/ferops/*.py`` files that ``path`` imports, directly or through other modules."""
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ferops"):
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("ferops")]
        for name in names:
            rel = f"src/{name.replace('.', '/')}.py"
            if rel not in seen and (ROOT / rel).exists():
                seen.add(rel)
                imported_modules(ROOT / rel, seen)
    return seen


def test_stage_deps_cover_the_code_each_stage_runs() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    problems = {}
    for name, stage in stages.items():
        script = f"pipelines/{name}.py"
        assert script in stage["deps"], f"stage {name} does not depend on {script}"
        missing = imported_modules(ROOT / script, set()) - set(stage["deps"])
        if missing:
            problems[name] = sorted(missing)
    assert not problems, f"deps missing from dvc.yaml: {problems}"
