"""The MLflow model registry: register a serving bundle once, promote it only on evidence.

A registered version is a pyfunc model whose artifacts are the whole serving bundle (ONNX model,
labels, preprocessing, rule trees and patterns), the PyTorch weights and the model card; it takes
image bytes and answers like the service's ``/predict`` (:class:`BundleModel`). The ONNX network
is also logged in the onnx flavour. ``champion`` moves to a new version only when its test
accuracy on the same split definition is at least the champion's plus a margin and it has not
forgotten breadth: its FER+ public-test accuracy through the bundle (``served`` stage) may be at
most ``ferplus_max_drop`` below the champion's. Otherwise the version is the ``challenger`` and
its ``promotion`` tag says why.

A registered version serves itself: the ``ferops`` package is logged with it as code
(``code_paths``) and its requirements are :func:`serving_requirements`, so
``mlflow models serve -m models:/ferops-resnet18@champion --env-manager uv`` builds an
environment from the model alone (no ferops install, no torch) and answers images.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np

from ferops import MODEL_NAME
from ferops.digests import file_digest
from ferops.inference import RULES_FILE, Predictor
from ferops.sections import SectionConfig

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
#: The model card (intended use, data, figures, legal context), relative to the repository root
#: the pipeline runs in; logged with every registered version, its summary in the descriptions.
MODEL_CARD = Path("MODEL_CARD.md")
#: The pyfunc artifact that holds the serving bundle; MLflow 3 stores a pyfunc's ``artifacts``
#: under ``artifacts/<key>/`` of the logged model, so the rules are at :data:`RULES_ARTIFACT`.
BUNDLE_ARTIFACT = "bundle"
RULES_ARTIFACT = f"artifacts/{BUNDLE_ARTIFACT}/{RULES_FILE}"
#: MLflow's SQL stores keep at most this many characters of a model or version description.
DESCRIPTION_LIMIT = 5000
#: The serving pins (package data of ``ferops``): the one list that ``bentofile.yaml`` and the
#: registered pyfunc's ``pip_requirements`` both read.
SERVING_REQUIREMENTS_FILE = "requirements-serving.txt"
#: The package folder logged as the pyfunc's code (``code_paths``): everything its class needs.
PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class RegisterConfig(SectionConfig):
    """The ``register`` section of params.yaml."""

    margin: float = 0.0  # champion moves only if test accuracy >= champion's + margin
    ferplus_max_drop: float = 0.02  # … and FER+ public-test accuracy >= champion's − this


def serving_requirements() -> list[str]:
    """The requirement lines of :data:`SERVING_REQUIREMENTS_FILE`, without comments (a line's
    ``#`` after whitespace, as pip reads them) and blank lines."""
    text = (importlib.resources.files("ferops") / SERVING_REQUIREMENTS_FILE).read_text("utf-8")
    lines = (re.sub(r"(^|\s+)#.*$", "", line).strip() for line in text.splitlines())
    return [line for line in lines if line]


def image_signature():
    """The pyfunc's MLflow signature: a table with an ``image`` column of image bytes (base64
    strings in JSON, as MLflow encodes binary columns) and an optional boolean ``crop``; the
    ``explain`` parameter adds ``/explain``'s explanation to every face."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("binary", "image"), ColSpec("boolean", "crop", required=False)])
    params = ParamSchema([ParamSpec("explain", "boolean", False)])
    return ModelSignature(inputs=inputs, params=params)


class BundleModel(mlflow.pyfunc.PythonModel):
    """pyfunc image model: per input row (``image`` bytes, optional ``crop``) the record the
    service's ``/predict`` answers — ``faces`` (expression, the 7 probabilities, box, score,
    principal), ``reason`` (``no_face`` / ``image_too_small`` when there are none) and ``model``
    (the bundle's manifest sha256) — and ``error`` / ``detail``: ``None``, or for bytes that are
    not a usable image (then ``faces: []``) ``/predict``'s error code and its detail. Face crops
    of all rows share one batch.
    """

    def load_context(self, context) -> None:
        bundle = Path(context.artifacts[BUNDLE_ARTIFACT])
        self.predictor = Predictor(bundle)
        self.model = f"bundle:{file_digest(bundle / 'manifest.json')[:12]}"

    def predict(self, context, model_input, params=None) -> list[dict[str, Any]]:
        import base64

        import pandas as pd

        from ferops.inference import UploadLimits, UploadRefused

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "image" not in frame.columns:
            columns = list(frame.columns)
            raise ValueError(f"input needs an 'image' column of image bytes, got {columns}")
        explain = bool((params or {}).get("explain", False))
        crops_flag = frame["crop"] if "crop" in frame.columns else [False] * len(frame)
        limits = UploadLimits.from_env()
        records: list[dict[str, Any]] = []
        located, batches = [], []
        for data, is_crop in zip(frame["image"], crops_flag, strict=True):
            # error / detail on every row (None for a usable image): one table shape (Spark).
            record: dict[str, Any] = {
                "faces": [],
                "reason": None,
                "model": self.model,
                "error": None,
                "detail": None,
            }
            records.append(record)
            if isinstance(data, str):  # base64 text, when no signature decoded it
                data = base64.b64decode(data)
            is_crop = bool(is_crop) if is_crop is not None and not pd.isna(is_crop) else False
            try:  # the inference core's request path, as the service's lanes run it
                found = self.predictor.locate_upload(bytes(data), is_crop, limits)
            except UploadRefused as exc:
                record.update(error=exc.reason, detail=exc.detail)
                continue
            record["reason"] = found.reason
            if found.crops:
                located.append((record, found))
                batches.append(self.predictor.network_input(found.crops, explain))
        if batches:  # the faces of all rows share one forward pass
            logits, features = self.predictor.run(np.concatenate(batches))
            start = 0
            for (record, found), batch in zip(located, batches, strict=True):
                stop = start + len(batch)
                record["faces"] = self.predictor.records(
                    found, logits[start:stop], features[start:stop], explain
                )
                start = stop
        return records


def card_summary(card: str) -> str:
    """The card's ``## Summary`` section (else the text before its second heading), stripped
    of its heading: the registered model's description."""
    lines = card.strip().splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.strip() == "## Summary"), 1)
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).strip()


def version_description(summary: str, facts: dict[str, str]) -> str:
    """A version's description: the card's summary, then this version's facts (a bullet each),
    cut to :data:`DESCRIPTION_LIMIT` characters."""
    bullets = "\n".join(f"- {key}: {value}" for key, value in facts.items())
    text = f"{summary}\n\n**This version**\n\n{bullets}"
    return text if len(text) <= DESCRIPTION_LIMIT else text[: DESCRIPTION_LIMIT - 1] + "…"


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


#: The version tag holding the FER+ public-test majority accuracy through the bundle.
FERPLUS_TAG = "ferplus_publictest_accuracy"


def _number_tag(version, tag: str) -> float:
    """A version's numeric tag, NaN when it is missing or not a number."""
    try:
        return float(version.tags.get(tag))
    except (TypeError, ValueError):
        return math.nan


def promotion_gate(
    champion,
    test_accuracy: float,
    split_definition: str | None,
    margin: float,
    ferplus_accuracy: float | None = None,
    ferplus_max_drop: float = 0.02,
) -> tuple[bool, str]:
    """Whether a version with ``test_accuracy`` on ``split_definition`` (and
    ``ferplus_accuracy`` on the FER+ public test) takes ``champion`` from ``champion`` (a model
    version or ``None``), and why.

    A champion whose tags cannot be compared (another split, a test accuracy that is not a
    number, a FER+ figure on one side only) is never replaced automatically. A candidate more
    than ``ferplus_max_drop`` below the champion's FER+ figure stays challenger whatever its
    SFEW test accuracy: it forgets FER+."""
    if champion is None:
        return True, "no champion yet"
    if champion.tags.get("split_definition") != split_definition:
        return False, (
            f"champion v{champion.version} was tested on another split definition: "
            "not comparable, promote by hand"
        )
    best = _number_tag(champion, "test_accuracy")
    if not math.isfinite(best):
        return False, (
            f"champion v{champion.version}'s test_accuracy tag "
            f"{champion.tags.get('test_accuracy')!r} is not a number: not comparable, "
            "promote by hand"
        )
    # The tag holds 6 decimals: compare at that precision, or a tie would lose to rounding.
    promote = round(test_accuracy, 6) >= round(best + margin, 6)
    reason = (
        f"test accuracy {test_accuracy:.4f} {'>=' if promote else '<'} champion "
        f"v{champion.version}'s {best:.4f} + margin {margin}"
    )
    champion_ferplus = _number_tag(champion, FERPLUS_TAG)
    has_ferplus = ferplus_accuracy is not None and math.isfinite(ferplus_accuracy)
    if has_ferplus != math.isfinite(champion_ferplus):
        return False, (
            f"only one of this version and champion v{champion.version} has a FER+ figure: "
            "not comparable, promote by hand"
        )
    if has_ferplus:
        keeps = round(ferplus_accuracy, 6) >= round(champion_ferplus - ferplus_max_drop, 6)
        reason += (
            f"; FER+ {ferplus_accuracy:.4f} {'>=' if keeps else '<'} champion's "
            f"{champion_ferplus:.4f} − {ferplus_max_drop}" + ("" if keeps else " (forgets FER+)")
        )
        promote = promote and keeps
    return promote, reason


def register_bundle(
    bundle: Path,
    weights: Path,
    run_id: str,
    tags: dict[str, str],
    test_accuracy: float,
    margin: float = 0.0,
    name: str = MODEL_NAME,
    card: Path | None = MODEL_CARD,
    ferplus_accuracy: float | None = None,
    ferplus_max_drop: float = 0.02,
) -> dict[str, Any]:
    """Register ``bundle`` (idempotent) and apply the promotion gate (:func:`promotion_gate`);
    return the decision. ``ferplus_accuracy`` is tagged on the version as :data:`FERPLUS_TAG`.

    ``card`` (the model card, when the file exists) is logged with the version's artifacts as
    ``MODEL_CARD.md``; its summary becomes the registered model's description and, with the
    version's facts, the version's description. A bundle already registered is left as it is.

    The champion is read before anything is written: if the registry cannot say who the champion
    is, this raises and registers nothing (a later run gates the bundle afresh).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    bundle_sha = file_digest(Path(bundle) / "manifest.json")
    existing = find_version(client, name, bundle_sha)
    if existing is not None:
        log.info("bundle %s is already %s version %s", bundle_sha[:12], name, existing.version)
        # search_model_versions leaves aliases empty: ask the registered model.
        aliases = sorted(
            a
            for a, v in client.get_registered_model(name).aliases.items()
            if str(v) == str(existing.version)
        )
        return {
            "action": "unchanged",
            "name": name,
            "version": int(existing.version),
            "aliases": aliases,
            "reason": "this bundle is already registered",
        }

    champion = champion_version(client, name)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    with mlflow.start_run(run_id=run_id):
        import onnx

        mlflow.onnx.log_model(onnx.load(str(Path(bundle) / "model.onnx")), name="onnx")
        artifacts = {BUNDLE_ARTIFACT: str(bundle), "weights": str(weights)}
        if card is not None and Path(card).is_file():
            artifacts["model_card"] = str(card)
        else:
            log.warning("no model card at %s: the version gets no card and no description", card)
        # cloudpickle stores BundleModel by reference (module ferops.registry): loading the model
        # imports ferops. MLflow 3.17 copies a code_paths folder to code/<name> in the model and
        # puts code/ first on sys.path before it unpickles, so `mlflow models serve` and
        # spark_udf import ferops in an environment built from pip_requirements alone (which
        # MLflow prefixes with mlflow==<its version>).
        info = mlflow.pyfunc.log_model(
            name="bundle",
            python_model=BundleModel(),
            artifacts=artifacts,
            signature=image_signature(),
            code_paths=[str(PACKAGE_DIR)],
            pip_requirements=serving_requirements(),
        )
    version_tags = {**tags, "bundle_sha256": bundle_sha, "test_accuracy": f"{test_accuracy:.6f}"}
    if ferplus_accuracy is not None:
        version_tags[FERPLUS_TAG] = f"{ferplus_accuracy:.6f}"
    version = mlflow.register_model(info.model_uri, name, tags=version_tags)
    number = int(version.version)

    decision = {
        "action": "registered",
        "name": name,
        "version": number,
        "test_accuracy": test_accuracy,
        "margin": margin,
        "ferplus_accuracy": ferplus_accuracy,
        "ferplus_max_drop": ferplus_max_drop,
    }
    promote, reason = promotion_gate(
        champion,
        test_accuracy,
        tags.get("split_definition"),
        margin,
        ferplus_accuracy,
        ferplus_max_drop,
    )
    alias = CHAMPION if promote else CHALLENGER
    client.set_registered_model_alias(name, alias, number)
    client.set_model_version_tag(name, str(number), "promotion", f"{alias}: {reason}")
    if "model_card" in artifacts:
        summary = card_summary(Path(card).read_text(encoding="utf-8"))[:DESCRIPTION_LIMIT]
        client.update_registered_model(name, description=summary)
        facts = {
            "test accuracy": f"{test_accuracy:.4f}",
            "FER+ public-test accuracy": (
                "not measured" if ferplus_accuracy is None else f"{ferplus_accuracy:.4f}"
            ),
            "test split sha256": tags.get("split_definition", "unknown"),
            "git commit": tags.get("git_commit", "unknown"),
            "bundle sha256": bundle_sha,
            "run": run_id,
            "promotion at registration": f"{alias}: {reason}",
            "model card": "MODEL_CARD.md in this version's artifacts",
        }
        description = version_description(summary, facts)
        client.update_model_version(name, str(number), description=description)
    decision.update(
        alias=alias, reason=reason, champion=number if promote else int(champion.version)
    )
    log.info("%s v%d → %s (%s)", name, number, alias, reason)
    return decision
