"""The real dvc.yaml on a tiny real data set: `dvc repro` runs every stage, a second run does
nothing, and `dvc metrics show` reads the committed metrics."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ferops.data import CLASSES, scan_frames
from tests.conftest import ROOT

#: Overrides that make every stage fast; the rest of params.yaml is used as shipped.
TINY = {
    "prepare": {"faces": {"cascade": [{"detector": "hog", "upsample": 0}], "size": 64},
                "no_face": "centre"},
    "split": {"folds": 2, "test_size": 0.25, "val_size": 0.25},
}  # fmt: skip


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, sfew_root: Path, fer_root: Path) -> Path:
    """A throw-away git+DVC project with the real code and pipeline and ~5 frames per class."""
    proj = tmp_path_factory.mktemp("proj")
    for name in ("dvc.yaml", "pipelines", "src"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, proj / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (proj / "params.yaml").write_text(yaml.safe_dump(_merge(params, TINY), sort_keys=False))
    frames = scan_frames(sfew_root)
    for label in CLASSES:
        for frame in [f for f in frames if f.label == label][:: 97 // 5 + 1][:5]:
            dest = proj / "data/raw/sfew" / label / frame.path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(frame.path)
    for split in ("train", "publictest"):
        for label in CLASSES:
            (proj / "data/raw/fer2013" / split / label).mkdir(parents=True)
            for path in sorted((fer_root / split / label).iterdir())[:4]:
                (proj / "data/raw/fer2013" / split / label / path.name).symlink_to(path)
    return proj


@pytest.fixture(scope="module")
def env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t", DVC_NO_ANALYTICS="1")  # fmt: skip
    env["PYTHONPATH"] = "src"  # run the copied code, the code DVC hashed
    return env


def test_repro_runs_all_stages_then_nothing(project: Path, env: dict) -> None:
    _run(["git", "init", "-q"], project, env)
    _run(["dvc", "init", "-q"], project, env)
    first = _run(["dvc", "repro"], project, env)
    stages = list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    for stage in stages:
        assert f"Running stage '{stage}'" in first, first
    second = _run(["dvc", "repro"], project, env)
    assert "Running stage" not in second, second
    status = _run(["dvc", "status"], project, env)
    assert "up to date" in status, status
    shown = _run(["dvc", "metrics", "show"], project, env)
    assert "detection_rate" in shown


def test_changing_a_param_reruns_only_downstream(project: Path, env: dict) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["augment"]["ops"] = ["original", "flip"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(["dvc", "repro"], project, env)
    assert "Running stage 'augment'" in out
    assert "Running stage 'prepare'" not in out and "Running stage 'fer2013'" not in out
