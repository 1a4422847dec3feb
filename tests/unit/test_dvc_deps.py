"""Every stage in dvc.yaml lists, as deps, each ferops module its script imports (transitively),
so `dvc repro` reruns a stage whenever code it runs has changed."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from tests.paths import ROOT


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


def _options(script: Path) -> dict[str, bool]:
    """``--option`` → required, for every ``add_argument`` call of a stage script."""
    options = {}
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            name = (
                node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else ""
            )
            required = any(
                k.arg == "required" and getattr(k.value, "value", False) for k in node.keywords
            )
            if name.startswith("--"):
                options[name] = required
    return options


def _declared(stage: dict) -> list[str]:
    paths = []
    for key in ("deps", "outs", "metrics", "plots"):
        for item in stage.get(key, []):
            paths.append(next(iter(item)) if isinstance(item, dict) else item)
    return paths


def test_paths_live_in_dvc_yaml_and_agree_with_the_scripts() -> None:
    """Each stage's cmd gives every required option of its script (no path defaults in the
    scripts), names no option the script lacks, and every path it passes is a declared dep,
    out, metric or plot, inside one, or a folder holding one (the zoo: only the model file a
    stage reads is its dep)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        words = stage["cmd"].split()
        script = ROOT / words[1]
        options = _options(script)
        given = [w for w in words[2:] if w.startswith("--")]
        assert set(given) <= set(options), (name, sorted(set(given) - set(options)))
        missing = [o for o, required in options.items() if required and o not in given]
        assert not missing, f"stage {name} does not pass {missing}"
        declared = _declared(stage)
        for word in words[2:]:
            if word.startswith("--") or "/" not in word:
                continue
            inside = (
                word == d or word.startswith(d + "/") or d.startswith(word + "/") for d in declared
            )
            assert any(inside), f"stage {name} passes {word}, which dvc.yaml does not declare"


def test_pretraining_reads_nothing_derived_from_sfew() -> None:
    """``pretrain``'s data inputs come from FER2013 only (its teacher logits included), so a
    change of the SFEW chips (another CPU's floats) never reruns the pre-training."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["pretrain"]
    data = [d for d in stage["deps"] if d.startswith("data/")]
    assert data and all("sfew" not in d and "prepared" not in d for d in data), data
