"""The MLflow model registry: register a serving bundle once, promote it only on evidence.

A registered version is a pyfunc model whose artifacts are the whole serving bundle (ONNX model,
labels, preprocessing, rule trees and patterns) and the PyTorch weights; the ONNX network is also
logged in the onnx flavour. ``champion`` moves to a new version only when its test accuracy on
the same split definition is at least the champion's plus a margin; otherwise the version is
the ``challenger`` and the decision says why.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np

from ferops.inference import Predictor, sha256

log = logging.getLogger(__name__)

MODEL_NAME = "ferops-resnet18"
CHAMPION, CHALLENGER = "champion", "challenger"
SERVING_REQUIREMENTS = ["onnxruntime-gpu==1.31.1", "dlib-bin==20.0.1.post1",
                        "face-recognition-models==0.3.0", "opencv-python-headless==5.0.0.93",
                        "numpy==2.4.6", "pillow==13.0.0"]  # fmt: skip


class BundleModel(mlflow.pyfunc.PythonModel):
    """pyfunc face-crop classifier: input N gray crops (N×H×W uint8), output N×7 logits."""

    def load_context(self, context) -> None:
        self.predictor = Predictor(Path(context.artifacts["bundle"]))

    def predict(self, context, model_input, params=None) -> np.ndarray:
        crops = [np.asarray(crop, dtype=np.uint8) for crop in np.asarray(model_input)]
        logits, _ = self.predictor.classify(crops)
        return logits


def split_definition(rows: list[dict[str, str]]) -> str:
    """sha256 of the test split's image ids: versions are only compared on the same test set."""
    ids = sorted(r["image_id"] for r in rows if r["split"] == "test")
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def find_version(client, name: str, bundle_sha: str):
    """The registered version holding this exact bundle, if any."""
    for version in client.search_model_versions(f"name='{name}'"):
        if version.tags.get("bundle_sha256") == bundle_sha:
            return version
    return None


def champion_version(client, name: str):
    """The version holding ``champion``, or ``None`` only when the registry says there is none.

    "None" means the registered model does not exist (``RESOURCE_DOES_NOT_EXIST``) or has no
    ``champion`` alias. Any other registry error propagates, so the gate fails closed: a registry
    that is unreachable or answers with an error never lets a version be promoted.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    # The alias map, not get_model_version_by_alias: MLflow 3.17 answers a missing alias with
    # INVALID_PARAMETER_VALUE, the same code as a malformed request.
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    if CHAMPION not in aliases:
        return None
    return client.get_model_version(name, str(aliases[CHAMPION]))


def promotion_gate(champion, test_accuracy: float, split_definition: str | None,
                   margin: float) -> tuple[bool, str]:  # fmt: skip
    """Whether a version with ``test_accuracy`` on ``split_definition`` takes ``champion`` from
    ``champion`` (a model version or ``None``), and why. A champion whose tags cannot be compared
    (another split, a test accuracy that is not a number) is never replaced automatically."""
    if champion is None:
        return True, "no champion yet"
    if champion.tags.get("split_definition") != split_definition:
        return False, (f"champion v{champion.version} was tested on another split definition: "
                       "not comparable, promote by hand")  # fmt: skip
    raw = champion.tags.get("test_accuracy")
    try:
        best = float(raw)
    except (TypeError, ValueError):
        best = math.nan
    if not math.isfinite(best):
        return False, (f"champion v{champion.version}'s test_accuracy tag {raw!r} is not a "
                       "number: not comparable, promote by hand")  # fmt: skip
    # The tag holds 6 decimals: compare at that precision, or a tie would lose to rounding.
    promote = round(test_accuracy, 6) >= round(best + margin, 6)
    return promote, (f"test accuracy {test_accuracy:.4f} {'>=' if promote else '<'} champion "
                     f"v{champion.version}'s {best:.4f} + margin {margin}")  # fmt: skip


def register_bundle(bundle: Path, weights: Path, run_id: str, tags: dict[str, str],
                    test_accuracy: float, margin: float = 0.0,
                    name: str = MODEL_NAME) -> dict[str, Any]:  # fmt: skip
    """Register ``bundle`` (idempotent) and apply the promotion gate; return the decision.

    The champion is read before anything is written: if the registry cannot say who the champion
    is, this raises and registers nothing (a later run gates the bundle afresh).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    bundle_sha = sha256(Path(bundle) / "manifest.json")
    existing = find_version(client, name, bundle_sha)
    if existing is not None:
        log.info("bundle %s is already %s version %s", bundle_sha[:12], name, existing.version)
        # search_model_versions leaves aliases empty: ask the registered model.
        aliases = sorted(a for a, v in client.get_registered_model(name).aliases.items()
                         if str(v) == str(existing.version))  # fmt: skip
        return {"action": "unchanged", "name": name, "version": int(existing.version),
                "aliases": aliases, "reason": "this bundle is already registered"}  # fmt: skip

    champion = champion_version(client, name)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    with mlflow.start_run(run_id=run_id):
        import onnx

        mlflow.onnx.log_model(onnx.load(str(Path(bundle) / "model.onnx")), name="onnx")
        info = mlflow.pyfunc.log_model(name="bundle", python_model=BundleModel(),
                                       artifacts={"bundle": str(bundle), "weights": str(weights)},
                                       pip_requirements=SERVING_REQUIREMENTS)  # fmt: skip
    version_tags = {**tags, "bundle_sha256": bundle_sha, "test_accuracy": f"{test_accuracy:.6f}"}
    version = mlflow.register_model(info.model_uri, name, tags=version_tags)
    number = int(version.version)

    decision = {"action": "registered", "name": name, "version": number,
                "test_accuracy": test_accuracy, "margin": margin}  # fmt: skip
    promote, reason = promotion_gate(champion, test_accuracy, tags.get("split_definition"), margin)
    alias = CHAMPION if promote else CHALLENGER
    client.set_registered_model_alias(name, alias, number)
    client.set_model_version_tag(name, str(number), "promotion", f"{alias}: {reason}")
    decision.update(alias=alias, reason=reason,
                    champion=number if promote else int(champion.version))  # fmt: skip
    log.info("%s v%d → %s (%s)", name, number, alias, reason)
    return decision
