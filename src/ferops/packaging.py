"""From the MLflow registry to the BentoML model store: the step before ``bentoml build``.

The service serves the BentoML model ``ferops-resnet18:latest``; this module puts the registry's
``champion`` (or any alias / version) in the store, verified, with its provenance (registered
name, version, alias, bundle sha256, test accuracy, git commit, the tracking URI without
credentials) as metadata, and points ``latest`` at it — also when the bundle was already there,
so a rollback in the registry reaches ``bentoml serve`` and ``bentoml build``. The same bundle
imported twice is one BentoML model.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ferops import MODEL_NAME
from ferops.api import redact_uri
from ferops.digests import file_digest
from ferops.inference import verify_bundle

log = logging.getLogger(__name__)


def make_latest(tag: str) -> str:
    """Point ``<name>:latest`` in the local BentoML model store at ``tag``; returns the tag.

    Works around BentoML 1.4.40's model store, which moves ``latest`` only when a model is
    created or deleted (``bentoml._internal.store.Store.register`` / ``delete``): importing a
    bundle that is already in the store — a rollback — left ``latest`` on the newer model, so
    ``bentoml serve`` and ``bentoml build`` (``bentofile.yaml`` packs ``:latest``) went on serving
    it. The store keeps ``latest`` as the file ``<store>/<name>/latest`` holding the version; it
    is rewritten here and read back through BentoML, so a change of that layout fails loudly
    instead of serving the wrong model.
    """
    import bentoml

    model = bentoml.models.get(tag)
    (Path(model.path).parent / "latest").write_text(str(model.tag.version))
    latest = bentoml.models.get(f"{model.tag.name}:latest").tag
    if latest != model.tag:
        raise RuntimeError(
            f"could not point {model.tag.name}:latest at {model.tag} "
            f"(BentoML resolves it to {latest}): has the model store layout changed?"
        )
    return str(model.tag)


def find_bundle(folder: Path) -> Path:
    """The bundle folder (the one holding ``manifest.json``) inside downloaded artifacts."""
    found = sorted(Path(folder).rglob("manifest.json"))
    if not found:
        raise FileNotFoundError(f"no serving bundle (manifest.json) under {folder}")
    return found[0].parent


def store_bundle(bundle: Path, metadata: dict[str, Any], name: str = MODEL_NAME) -> str:
    """Copy a verified bundle into the BentoML model store and make it ``latest``; returns the
    model tag.

    Idempotent: when a model of that name already holds a bundle with the same manifest sha256,
    nothing is copied; that model becomes ``latest`` and its tag is returned.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    manifest = verify_bundle(bundle)
    bundle_sha = file_digest(Path(bundle) / "manifest.json")
    try:
        existing = bentoml.models.list(name)
    except NotFound:
        existing = []
    for model in existing:
        if model.info.metadata.get("bundle_sha256") == bundle_sha:
            log.info(
                "bundle %s is already BentoML model %s: now %s:latest",
                bundle_sha[:12],
                model.tag,
                name,
            )
            return make_latest(str(model.tag))
    labels = {"source": "mlflow" if "mlflow_version" in metadata else "bundle"}
    meta = {**{k: v for k, v in metadata.items() if v is not None}, "bundle_sha256": bundle_sha}
    with bentoml.models.create(name, labels=labels, metadata=meta, module="ferops") as model:
        for file in (*sorted(manifest["files"]), "manifest.json"):  # with the int8 model if any
            shutil.copy2(Path(bundle) / file, Path(model.path) / file)
    verify_bundle(Path(model.path))
    log.info("stored bundle %s as BentoML model %s", bundle_sha[:12], model.tag)
    return make_latest(str(model.tag))


def registered_version(
    alias: str | None = "champion", version: int | None = None, name: str = MODEL_NAME
):
    """The registered version an alias (default: the champion) or a number names, in the
    tracking store ``MLFLOW_TRACKING_URI`` points at — where every command that serves or
    scores a version resolves it."""
    from mlflow.tracking import MlflowClient

    if (alias is None) == (version is None):
        raise ValueError("give exactly one of alias or version")
    client = MlflowClient()
    if alias is not None:
        return client.get_model_version_by_alias(name, alias)
    return client.get_model_version(name, str(version))


def download_bundle(found, folder: Path) -> Path:
    """A registered version's serving bundle, downloaded into ``folder``."""
    import mlflow

    uri = f"models:/{found.name}/{found.version}"
    return find_bundle(Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(folder))))


def import_from_registry(
    alias: str | None = "champion", version: int | None = None, name: str = MODEL_NAME
) -> str:
    """Download ``models:/name@alias`` (or ``/version``) from MLflow into the BentoML store."""
    import mlflow

    found = registered_version(alias, version, name)
    with tempfile.TemporaryDirectory(prefix="ferops-import-") as tmp:
        bundle = download_bundle(found, Path(tmp))
        metadata = {
            "mlflow_name": name,
            "mlflow_version": int(found.version),
            "mlflow_alias": alias,
            "mlflow_run_id": found.run_id,
            "tracking_uri": redact_uri(mlflow.get_tracking_uri()),
            "test_accuracy": found.tags.get("test_accuracy"),
            "git_commit": found.tags.get("git_commit"),
        }
        return store_bundle(bundle, metadata)
