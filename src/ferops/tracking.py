"""MLflow tracking for pipeline runs: one run per pipeline execution, shared by its stages.

The ``train`` stage opens the run and writes its id to a stage output; later stages reopen it.
Default tracking URI is a local sqlite file (no server needed for ``dvc repro``);
``MLFLOW_TRACKING_URI`` points everything at a server instead.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT = "ferops"
#: MLflow 3's UI opens an experiment by this tag: without it, an experiment may open in the GenAI
#: view (traces); ``custom_model_development`` opens it on its training runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the local sqlite file."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.05}}`` → ``{"train.lr": "0.05"}``; lists become JSON strings."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value, sort_keys=True)
        else:
            out[name] = str(value)
    return out


def git_commit(cwd: Path | None = None) -> str:
    """HEAD's commit, with ``-dirty`` when tracked files differ; ``unknown`` outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_data_hash(data: Path, root: Path = Path(".")) -> str:
    """The md5 DVC records for a raw-data folder: from its ``.dvc`` pointer file, else from the
    stage that consumed it in ``dvc.lock``; ``unknown`` when DVC records neither."""
    pointer = root / f"{data}.dvc"
    try:
        if pointer.exists():
            return str(yaml.safe_load(pointer.read_text())["outs"][0]["md5"])
        lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
        for stage in lock.get("stages", {}).values():
            for dep in stage.get("deps", []):
                if Path(dep["path"]) == Path(data):
                    return str(dep["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        pass
    return "unknown"


def open_experiment(name: str = EXPERIMENT):
    """Make ``name`` the active experiment (created when missing), marked as model training so
    MLflow 3's UI shows its runs; returns the experiment."""
    import mlflow

    experiment = mlflow.set_experiment(name)
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        mlflow.MlflowClient().set_experiment_tag(
            experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
        )
    return experiment


def start_run(run_file: Path, run_name: str, tags: dict[str, str]) -> str:
    """Open a new run in the ``ferops`` experiment, write its id to ``run_file``, return it."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment = open_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        run_id = run.info.run_id
    Path(run_file).parent.mkdir(parents=True, exist_ok=True)
    Path(run_file).write_text(
        json.dumps({"run_id": run_id, "experiment_id": experiment.experiment_id}, indent=2) + "\n"
    )
    log.info("MLflow run %s in %s (%s)", run_id, EXPERIMENT, tracking_uri())
    return run_id


@contextmanager
def resume_run(run_file: Path) -> Iterator[str]:
    """Reopen the run whose id ``run_file`` holds (written by :func:`start_run`)."""
    import mlflow

    try:
        run_id = json.loads(Path(run_file).read_text())["run_id"]
    except (OSError, KeyError, ValueError) as exc:
        raise RuntimeError(
            f"{run_file} holds no MLflow run id: run the train stage first"
        ) from exc
    mlflow.set_tracking_uri(tracking_uri())
    with mlflow.start_run(run_id=run_id):
        yield run_id


def run_in_this_store(
    run_file: Path, params_file: Path, sections: list[str], metrics: dict[str, float]
) -> str:
    """The id of the run ``run_file`` names when this tracking store has it; otherwise a new run
    of the ``ferops`` experiment standing for it, whose id is returned.

    Stage outputs pulled from a DVC remote were made by a run in another tracking store (the
    machine that computed them); registering them here needs a run of this store to log to.
    The new run records where the outputs came from (tag ``ferops.source_run``: the original
    id, ``ferops.restored``: true), the params ``sections`` and the given ``metrics``.
    ``run_file`` is not rewritten (it is a stage output, the same bytes on every machine).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    run_id = json.loads(Path(run_file).read_text())["run_id"]
    mlflow.set_tracking_uri(tracking_uri())
    try:
        mlflow.MlflowClient().get_run(run_id)
        return run_id
    except MlflowException:
        log.info(
            "run %s is not in %s (stage outputs pulled from a remote): a new run stands for it",
            run_id,
            tracking_uri(),
        )
    open_experiment(EXPERIMENT)
    tags = {**run_tags("restored"), "ferops.source_run": run_id, "ferops.restored": "true"}
    with mlflow.start_run(run_name="restored-from-stored-outputs", tags=tags) as run:
        log_params_file(params_file, sections)
        mlflow.log_metrics(metrics)
        return run.info.run_id


def log_to_run(
    run_file: Path,
    metrics: dict[str, float],
    folders: dict[str, Path] | None = None,
    files: dict[str, Path] | None = None,
) -> None:
    """A stage's epilogue: reopen the pipeline's run (:func:`resume_run`) and log ``metrics``,
    each folder of ``folders`` and each file of ``files`` under its artifact path."""
    import mlflow

    with resume_run(run_file):
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for artifact_path, folder in (folders or {}).items():
            mlflow.log_artifacts(str(folder), artifact_path=artifact_path)
        for artifact_path, file in (files or {}).items():
            mlflow.log_artifact(str(file), artifact_path=artifact_path)


def log_epoch(epoch: int, row: dict[str, float]) -> None:
    """Per-epoch metrics of the active run (an ``on_epoch`` callback for ``training.fit``)."""
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=epoch)


def run_tags(stage: str, root: Path = Path(".")) -> dict[str, str]:
    """Provenance tags every run carries: stage, git commit, DVC hashes of the raw data."""
    return {
        "stage": stage,
        "git_commit": git_commit(root),
        "data.sfew_md5": dvc_data_hash(Path("data/raw/sfew"), root),
        "data.fer2013_md5": dvc_data_hash(Path("data/raw/fer2013"), root),
    }


def log_params_file(params_file: Path, sections: list[str]) -> None:
    """Log the named ``params.yaml`` sections, flattened, to the active run."""
    import mlflow

    params = yaml.safe_load(Path(params_file).read_text()) or {}
    mlflow.log_params(flatten({s: params[s] for s in sections if s in params}))
