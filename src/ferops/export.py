"""ONNX export of the trained network and the serving bundle (the torch side of serving)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferops.faces import YUNET_FILE
from ferops.inference import BUNDLE_FILES, make_session, sha256
from ferops.model import FerResNet, LogitsAndFeatures

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The exported model does not behave like the torch model it came from."""


def export_onnx(model: FerResNet, input_size: int, path: Path) -> None:
    """One-file ONNX with input ``input`` (N×1×S×S, N symbolic) and outputs ``logits``,
    ``features``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 1, input_size, input_size)
    torch.onnx.export(LogitsAndFeatures(model.eval()).eval(), (example,), str(path),
                      input_names=["input"], output_names=["logits", "features"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},),
                      external_data=False, dynamo=True, verbose=False)  # fmt: skip
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


def check_parity(model: FerResNet, path: Path, input_size: int, tolerance: float,
                 batches: tuple[int, ...] = (1, 3), seed: int = 0) -> float:  # fmt: skip
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
        diff = max(float(np.abs(logits - t_logits.numpy()).max()),
                   float(np.abs(features - t_features.numpy()).max()))  # fmt: skip
        worst = max(worst, diff)
        if diff > tolerance:
            raise ExportError(f"ONNX and torch differ by {diff:.2e} at batch {batch} "
                              f"(tolerance {tolerance:.0e})")  # fmt: skip
    return worst


def build_bundle(folder: Path, onnx_path: Path, meta: dict[str, Any], rules: Path,
                 yunet: Path) -> dict[str, Any]:  # fmt: skip
    """Write the serving bundle: model, labels, preprocessing spec, rule trees and patterns, the
    YuNet face detector the framing contract needs, and a manifest with each file's sha256."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy(onnx_path, folder / "model.onnx")
    shutil.copy(rules, folder / "rules.json")
    shutil.copy(yunet, folder / YUNET_FILE)
    (folder / "labels.json").write_text(json.dumps(meta["classes"]) + "\n")
    spec = {key: meta[key] for key in ("input_size", "resize", "mean", "std", "faces")}
    (folder / "preprocess.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    manifest = {"files": {name: sha256(folder / name) for name in BUNDLE_FILES},
                "format": "ferops-bundle/1"}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
