"""Stage ``export``: ONNX with named outputs and a symbolic batch, parity-checked against torch,
and the serving bundle (model, labels, preprocessing, rule trees, sha256 manifest). The bundle's
test accuracy through ``ferops.inference`` is measured against the torch model's."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ferops.config import load_section, setup_logging, write_json
from ferops.data import load_faces
from ferops.export import build_bundle, check_dynamic_batch, check_parity, export_onnx
from ferops.faces import YUNET_FILE
from ferops.inference import Predictor
from ferops.model import load_checkpoint
from ferops.training import FaceSet, predict

log = logging.getLogger("export")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--rules", type=Path, default=Path("models/rules/rules.json"))
    parser.add_argument("--split", type=Path, default=Path("data/split/split.csv"))
    parser.add_argument("--crops", type=Path, default=Path("data/prepared/faces"))
    parser.add_argument("--zoo", type=Path, default=Path("data/raw/zoo"))
    parser.add_argument("--out", type=Path, default=Path("models/bundle"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/export.json"))
    args = parser.parse_args(argv)
    setup_logging()

    tolerance = float(load_section(args.params, "export").get("tolerance", 1e-4))
    model, meta = load_checkpoint(args.model)
    onnx_path = args.out.parent / "model.onnx"
    export_onnx(model, meta["input_size"], onnx_path)
    batch_dim = check_dynamic_batch(onnx_path)
    worst = check_parity(model, onnx_path, meta["input_size"], tolerance)
    manifest = build_bundle(args.out, onnx_path, meta, args.rules, args.zoo / YUNET_FILE)
    onnx_path.unlink()

    images, labels, _ = load_faces(args.split, args.crops, ["test"])
    torch_logits, _ = predict(model, FaceSet(images, labels, meta["resize"]), meta["input_size"],
                              device="cpu")  # fmt: skip
    predictor = Predictor(args.out, providers="cpu")
    onnx_logits, _ = predictor.classify(images)
    truth = np.asarray(labels)
    metrics = {
        "parity_max_abs_diff": worst, "tolerance": tolerance, "batch_dim": batch_dim,
        "test_accuracy_torch": float((torch_logits.argmax(1) == truth).mean()),
        "test_accuracy_onnx": float((onnx_logits.argmax(1) == truth).mean()),
        "test_predictions_equal": int((torch_logits.argmax(1) == onnx_logits.argmax(1)).sum()),
        "test_faces": len(truth), "bundle_sha256": manifest["files"],
    }  # fmt: skip
    write_json(args.metrics, metrics)
    log.info("export: parity %.2e, test accuracy torch %.4f / onnx %.4f", worst,
             metrics["test_accuracy_torch"], metrics["test_accuracy_onnx"])  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
