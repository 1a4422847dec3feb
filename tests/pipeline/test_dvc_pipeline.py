"""The real dvc.yaml on a tiny real data set, tracked by a real `mlflow server`: `dvc repro` runs
every stage, a second run does nothing, `dvc metrics show` reads the metrics, and MLflow holds
the run with its params, per-epoch metrics and pictures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ferops.data import CLASSES, scan_frames
from tests.paths import RAW_FERPLUS, RAW_ZOO, ROOT

#: Overrides that make every stage fast; the rest of params.yaml is used as shipped.
TINY = {
    "prepare": {"faces": {"size": 64}, "no_face": "centre"},
    "split": {"folds": 2, "test_size": 0.25, "val_size": 0.25},
    "pretrain": {"epochs": 1, "batch_size": 32, "input_size": 32, "resize": 36},
    "train": {"epochs": 2, "batch_size": 16, "input_size": 32, "resize": 36},
    "crossval": {"max_folds": 2},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, sfew_root: Path, fer_root: Path) -> Path:
    """A throw-away git+DVC project with the real code and pipeline and ~5 frames per class."""
    proj = tmp_path_factory.mktemp("proj")
    for name in ("dvc.yaml", "pipelines", "src", "docs"):
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
    (proj / "data/raw/zoo").mkdir(parents=True)
    for model in RAW_ZOO.glob("*.onnx"):  # YuNet and the teacher
        (proj / "data/raw/zoo" / model.name).symlink_to(model)
    (proj / "data/raw/ferplus").mkdir(parents=True)  # FER+ votes of every face, joined by path
    (proj / "data/raw/ferplus/votes.csv").symlink_to(RAW_FERPLUS / "votes.csv")
    for split in ("train", "publictest"):
        for label in CLASSES:
            (proj / "data/raw/fer2013" / split / label).mkdir(parents=True)
            for path in sorted((fer_root / split / label).iterdir())[:4]:
                (proj / "data/raw/fer2013" / split / label / path.name).symlink_to(path)
    return proj


@pytest.fixture(scope="module")
def env(mlflow_server: str) -> dict:
    env = dict(os.environ, MLFLOW_TRACKING_URI=mlflow_server)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
        DVC_NO_ANALYTICS="1",
    )
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
    assert "detection_rate" in shown and "accuracy" in shown


def test_mlflow_server_holds_the_run(project: Path, mlflow_server: str) -> None:
    import json

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    run_id = json.loads((project / "models/run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["prepare.faces.size"] == "64"
    assert run.data.tags["stage"] == "train"
    assert run.data.tags["data.sfew_md5"] != "unknown"
    history = client.get_metric_history(run_id, "val_acc")
    assert [m.step for m in history] == [1, 2]
    assert {"train_loss", "test_accuracy", "test_recall_Happy", "crossval_accuracy_mean"} <= set(
        run.data.metrics
    )
    evaluate = json.loads((project / "metrics/evaluate.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(evaluate["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run_id, "plots/train")}
    artifacts |= {a.path for a in client.list_artifacts(run_id, "plots/evaluate")}
    assert {
        "plots/train/curves.png",
        "plots/evaluate/confusion.png",
        "plots/evaluate/misclassified.png",
    } <= artifacts
    pretrain = client.get_run(run.data.tags["pretrain_run_id"])
    assert len(client.get_metric_history(pretrain.info.run_id, "val_acc")) == 1


def test_bundle_matches_the_torch_model(project: Path) -> None:
    import json

    from ferops.inference import verify_bundle

    verify_bundle(project / "models/bundle")
    export = json.loads((project / "metrics/export.json").read_text())
    assert export["parity_max_abs_diff"] <= export["tolerance"]
    assert export["test_accuracy_onnx"] == export["test_accuracy_torch"]
    assert export["test_predictions_equal"] == export["test_faces"]


def test_registered_as_champion(project: Path, mlflow_server: str) -> None:
    import json

    from mlflow.tracking import MlflowClient

    decision = json.loads((project / "models/registry.json").read_text())
    assert decision["action"] == "registered" and decision["alias"] == "champion"
    client = MlflowClient(tracking_uri=mlflow_server)
    champion = client.get_model_version_by_alias(decision["name"], "champion")
    assert int(champion.version) == decision["version"]
    assert champion.tags["bundle_sha256"] and champion.tags["split_definition"]
    served = json.loads((project / "metrics/served.json").read_text())
    assert float(champion.tags["ferplus_publictest_accuracy"]) == pytest.approx(
        served["ferplus_publictest_crop_accuracy"], abs=1e-6
    )


def test_features_csv_has_the_papers_columns(project: Path) -> None:
    from ferops.data import read_csv

    rows = read_csv(project / "data/features/features.csv")
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert [k for k in rows[0] if k.startswith("feature")] == [
        f"feature{i}" for i in range(1, 513)
    ]
    assert {r["predicted_label"] for r in rows} <= set(CLASSES)


def test_changing_a_param_reruns_only_downstream(project: Path, env: dict) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["augment"]["ops"] = ["original", "flip"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _run(["dvc", "repro"], project, env)
    assert "Running stage 'augment'" in out
    assert "Running stage 'prepare'" not in out and "Running stage 'fer2013'" not in out
    assert "Running stage 'pretrain'" not in out
