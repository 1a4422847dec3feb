"""ONNX export of the trained network and the serving bundle (the torch side of serving)."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferops.digests import file_digest
from ferops.explanation import Explainer
from ferops.faces import YUNET_FILE
from ferops.inference import BUNDLE_FILES, MODEL_FILES, RULES_FILE, make_session
from ferops.model import FerResNet, LogitsAndFeatures
from ferops.sections import SectionConfig

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The exported model does not behave like the torch model it came from."""


@dataclass(frozen=True)
class ExportConfig(SectionConfig):
    """The ``export`` section of params.yaml."""

    tolerance: float = 1e-4  # max |ONNX − torch| on logits and features
    precision: str = "fp32"  # the network the bundle serves: fp32 | int8 (both are in it)
    calibration_faces: int = 512  # train-split chips that calibrate the int8 activation ranges
    int8_max_accuracy_drop: float = 0.02  # int8 test accuracy may be at most this below fp32's
    int8_min_agreement: float = 0.9  # share of test faces where int8 and fp32 pick the same class

    def __post_init__(self) -> None:
        if self.precision not in MODEL_FILES:
            raise ValueError(f"precision {self.precision!r} is not one of {sorted(MODEL_FILES)}")
        if self.calibration_faces < 1:
            raise ValueError(f"calibration_faces must be >= 1, got {self.calibration_faces}")
        if not 0 <= self.int8_max_accuracy_drop <= 1 or not 0 <= self.int8_min_agreement <= 1:
            raise ValueError("int8_max_accuracy_drop and int8_min_agreement must be in [0, 1]")
        if self.tolerance <= 0:
            raise ValueError(f"tolerance must be > 0, got {self.tolerance}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_onnx(model: FerResNet, input_size: int, path: Path) -> None:
    """One-file ONNX with input ``input`` (N×1×S×S, N symbolic) and outputs ``logits``,
    ``features``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 1, input_size, input_size)
    torch.onnx.export(
        LogitsAndFeatures(model.eval()).eval(),
        (example,),
        str(path),
        input_names=["input"],
        output_names=["logits", "features"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
        dynamo=True,
        verbose=False,
    )
    strip_debug_metadata(path)


def strip_debug_metadata(path: Path) -> None:
    """Drop the exporter's debug metadata from an ONNX file, in place, so that the same weights
    always give the same bytes.

    torch 2.14's dynamo exporter tags every node with ``metadata_props`` (``namespace``,
    ``pkg.torch.onnx.stack_trace`` …) whose stack traces hold absolute source paths and line
    numbers: the same weights exported from two checkouts (or after an edit to ``model.py``)
    gave two ``model.onnx`` sha256s, and so two registered versions. The graph and weights are
    untouched; the graph-level metadata (export signature) is dropped with the node metadata.
    """
    import onnx

    model = onnx.load(str(path))
    graphs = [model.graph, *model.functions]
    while graphs:
        graph = graphs.pop()
        del graph.metadata_props[:]
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)
    onnx.save(model, str(path))


def check_dynamic_batch(path: Path) -> str:
    """The name of the input's symbolic batch dimension; raises if it is a fixed number."""
    import onnx

    graph = onnx.load(str(path)).graph
    dim = graph.input[0].type.tensor_type.shape.dim[0]
    if not dim.dim_param:
        raise ExportError(f"batch dimension of {path} is fixed at {dim.dim_value}, not symbolic")
    outputs = [o.name for o in graph.output]
    if outputs != ["logits", "features"]:
        raise ExportError(f"outputs of {path} are {outputs}, expected ['logits', 'features']")
    return dim.dim_param


def check_parity(
    model: FerResNet,
    path: Path,
    input_size: int,
    tolerance: float,
    batches: tuple[int, ...] = (1, 3),
    seed: int = 0,
) -> float:
    """Largest |ONNX Runtime − torch| over both outputs at the given batch sizes; raises
    :class:`ExportError` above ``tolerance``."""
    session = make_session(path, "cpu")
    rng = np.random.default_rng(seed)
    worst = 0.0
    for batch in batches:
        x = rng.standard_normal((batch, 1, input_size, input_size)).astype(np.float32)
        logits, features = session.run(["logits", "features"], {"input": x})
        with torch.no_grad():
            t_logits, t_features = model.eval().forward_features(torch.from_numpy(x))
        diff = max(
            float(np.abs(logits - t_logits.numpy()).max()),
            float(np.abs(features - t_features.numpy()).max()),
        )
        worst = max(worst, diff)
        if diff > tolerance:
            raise ExportError(
                f"ONNX and torch differ by {diff:.2e} at batch {batch} (tolerance {tolerance:.0e})"
            )
    return worst


#: Mantissa bits kept when calibration ranges are rounded outward (steps of at most 1/16 = 6 %).
RANGE_BITS = 5


def round_outward(value: np.ndarray, up: bool, bits: int = RANGE_BITS) -> np.ndarray:
    """``value`` rounded to ``bits`` significant bits, away from the inside of the range: up for
    a range's highest value, down for its lowest; 0 stays 0."""
    value = np.asarray(value, dtype=np.float64)
    mantissa, exponent = np.frexp(value)  # value = mantissa · 2**exponent, 0.5 <= |mantissa| < 1
    steps = mantissa * 2.0**bits
    steps = np.ceil(steps) if up else np.floor(steps)
    return np.ldexp(steps / 2.0**bits, exponent).astype(np.float32)


def calibration_subset(total: int, wanted: int) -> np.ndarray:
    """Indices of at most ``wanted`` of ``total`` items, evenly spaced in their order (all of
    them when ``wanted >= total``): a subset with no seed to keep."""
    if total < 1:
        raise ValueError("no calibration faces: the train split is empty")
    return np.unique(np.linspace(0, total - 1, min(wanted, total)).round().astype(int))


def rule_vote_agreement(explainer: Explainer, first: np.ndarray, second: np.ndarray) -> float:
    """Share of (face, class) rule-tree votes that two feature matrices (N×512) give alike: how
    far the explanations move when the network does (e.g. fp32 → int8)."""
    same = [
        explainer.trees[c].predict(first) == explainer.trees[c].predict(second)
        for c in explainer.classes
    ]
    return float(np.mean(same))


def calibration_batches(images: np.ndarray, batch_size: int = 32) -> Iterator[dict[str, Any]]:
    """Feeds for ONNX Runtime's calibrator, in order."""
    for start in range(0, len(images), batch_size):
        yield {"input": np.ascontiguousarray(images[start : start + batch_size])}


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray) -> dict[str, Any]:
    """Static int8 quantization of the exported network: QDQ, weights int8 per output channel,
    activations uint8 with MinMax ranges from ``calibration`` (N×1×S×S, preprocessed training
    chips — never test faces). Returns a summary (calibrated tensors, file size).

    The format was measured on this project's 2-core AVX-512 VNNI CPU (ONNX Runtime 1.31.1):
    uint8 activations × int8 weights (U8S8, what the VNNI kernels take) ran 2.7–3.5× fp32 at
    batch 32; int8 activations (S8S8) ran slower than fp32; QOperator was no faster than QDQ (ORT
    fuses DQ→Conv→Q into QLinearConv itself); per-tensor weights, reduce_range, percentile or
    entropy calibration agreed no better with fp32 on the validation split.

    Deterministic bytes: the activation ranges come from fp32 inference, whose last bits depend
    on the CPU's kernels (AVX-512 vs AVX2 sum in another order). The ranges are therefore rounded
    outward to :data:`RANGE_BITS` significant bits before quantizing (ORT's calibration cache is
    the documented way to hand it ranges), so the same weights and chips give the same bytes
    unless a range lies within a rounding error of a step.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.calibrate import load_tensors_data, save_tensors_data

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = calibration_batches(calibration)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    options = {
        "quant_format": QuantFormat.QDQ,
        "per_channel": True,
        "activation_type": QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
    }
    with tempfile.TemporaryDirectory(prefix="ferops-int8-") as tmp:
        cache = Path(tmp) / "ranges.json"
        # Pass 1 measures the ranges (its model is thrown away); pass 2 quantizes with them
        # rounded.
        quantize_static(
            str(fp32_path),
            str(Path(tmp) / "raw.onnx"),
            Reader(),
            calibration_cache_path=cache,
            **options,
        )
        ranges = load_tensors_data(cache)
        for name in sorted(ranges.keys()):
            low, high = ranges[name].range_value
            ranges[name].lowest = round_outward(low, up=False)
            ranges[name].highest = round_outward(high, up=True)
        save_tensors_data(ranges, cache)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(
            str(fp32_path), str(out_path), None, calibration_cache_path=cache, **options
        )
    return {
        "calibrated_tensors": len(list(ranges.keys())),
        "calibration_faces": len(calibration),
        "bytes": out_path.stat().st_size,
    }


def int8_agreement(
    fp32_logits: np.ndarray, int8_logits: np.ndarray, truth: np.ndarray
) -> dict[str, Any]:
    """Accuracy of both networks on faces labelled ``truth``, their argmax agreement and the
    largest logit difference."""
    truth = np.asarray(truth)
    if not len(truth) or fp32_logits.shape != int8_logits.shape or len(fp32_logits) != len(truth):
        raise ExportError(
            f"int8 parity needs matching non-empty logits and labels, got "
            f"{fp32_logits.shape}, {int8_logits.shape}, {truth.shape}"
        )
    fp32_pred, int8_pred = fp32_logits.argmax(1), int8_logits.argmax(1)
    return {
        "faces": len(truth),
        "accuracy_fp32": float((fp32_pred == truth).mean()),
        "accuracy_int8": float((int8_pred == truth).mean()),
        "agreement": float((fp32_pred == int8_pred).mean()),
        "logits_max_abs_diff": float(np.abs(fp32_logits - int8_logits).max()),
    }


def check_int8_parity(
    fp32_logits: np.ndarray, int8_logits: np.ndarray, truth: np.ndarray, config: ExportConfig
) -> dict[str, Any]:
    """:func:`int8_agreement` on the faces that judge int8 (the FER+ public-test majority in the
    ``export`` stage: 3,370 faces resolve a 2-point tolerance, 134 SFEW test faces do not). When
    ``config`` serves int8, a drop in accuracy beyond ``int8_max_accuracy_drop`` or an agreement
    under ``int8_min_agreement`` raises :class:`ExportError` (fails closed: NaN fails too); when
    it serves fp32 the same failures are only logged."""
    report = int8_agreement(fp32_logits, int8_logits, truth)
    drop = report["accuracy_fp32"] - report["accuracy_int8"]
    failures = []
    if not drop <= config.int8_max_accuracy_drop:
        failures.append(
            f"int8 accuracy {report['accuracy_int8']:.4f} is {drop:.4f} below "
            f"fp32's {report['accuracy_fp32']:.4f} "
            f"(int8_max_accuracy_drop {config.int8_max_accuracy_drop})"
        )
    if not report["agreement"] >= config.int8_min_agreement:
        failures.append(
            f"int8 and fp32 agree on {report['agreement']:.4f} of the faces "
            f"(int8_min_agreement {config.int8_min_agreement})"
        )
    report["passed"] = not failures
    if failures and config.precision == "int8":
        raise ExportError(
            "; ".join(failures) + ": set export.precision to fp32 or fix the int8 model"
        )
    for failure in failures:
        log.warning("int8 (not served): %s", failure)
    return report


def build_bundle(
    folder: Path,
    onnx_path: Path,
    meta: dict[str, Any],
    rules: Path,
    yunet: Path,
    int8_path: Path | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Write the serving bundle: model (and its int8 version, if given), labels, preprocessing
    spec, rule trees and patterns, the YuNet face detector the framing contract needs, and a
    manifest with each file's sha256 and the ``precision`` that serves."""
    if precision not in MODEL_FILES:
        raise ValueError(f"precision {precision!r} is not one of {sorted(MODEL_FILES)}")
    if precision == "int8" and int8_path is None:
        raise ValueError("precision int8 needs the int8 model (int8_path)")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy(onnx_path, folder / MODEL_FILES["fp32"])
    names = list(BUNDLE_FILES)
    if int8_path is not None:
        shutil.copy(int8_path, folder / MODEL_FILES["int8"])
        names.append(MODEL_FILES["int8"])
    shutil.copy(rules, folder / RULES_FILE)
    shutil.copy(yunet, folder / YUNET_FILE)
    (folder / "labels.json").write_text(json.dumps(meta["classes"]) + "\n")
    spec = {key: meta[key] for key in ("input_size", "resize", "mean", "std", "faces")}
    (folder / "preprocess.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    manifest = {
        "files": {name: file_digest(folder / name) for name in names},
        "format": "ferops-bundle/1",
        "precision": precision,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
