"""Stage ``export``: ONNX with named outputs and a symbolic batch, parity-checked against torch,
its int8 version (calibrated on train-split chips), and the serving bundle (both networks, labels,
preprocessing, rule trees, sha256 manifest naming the precision that serves). The bundle's test
accuracy through ``ferops.inference`` is measured against the torch model's. int8 is judged
against fp32 on the FER+ public-test majority (3,370 faces; the SFEW test figures are only
reported): the stage fails when the int8 network serves and loses more than params allow."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import numpy as np

from ferops.config import load_section, setup_logging, write_json
from ferops.data import load_faces
from ferops.export import (
    ExportConfig,
    ExportError,
    build_bundle,
    calibration_subset,
    check_dynamic_batch,
    check_int8_parity,
    check_parity,
    export_onnx,
    int8_agreement,
    quantize_int8,
    rule_vote_agreement,
)
from ferops.faces import YUNET_FILE
from ferops.inference import Predictor, Preprocess
from ferops.model import load_checkpoint
from ferops.recipe import fer2013_measured
from ferops.training import FaceSet, predict

log = logging.getLogger("export")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--rules", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--crops", type=Path, required=True)
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--fer2013", type=Path, required=True, help="the fer2013 stage's arrays")
    parser.add_argument("--votes", type=Path, required=True, help="the ferplus stage's votes")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    config = ExportConfig.from_section(load_section(args.params, "export"))
    model, meta = load_checkpoint(args.model)
    onnx_path = args.out.parent / "model.onnx"
    int8_path = args.out.parent / "model.int8.onnx"
    export_onnx(model, meta["input_size"], onnx_path)
    batch_dim = check_dynamic_batch(onnx_path)
    worst = check_parity(model, onnx_path, meta["input_size"], config.tolerance)

    train_images, _, _ = load_faces(args.split, args.crops, ["train"])  # never test faces
    chosen = calibration_subset(len(train_images), config.calibration_faces)
    preprocess = Preprocess(meta["input_size"], meta["resize"], meta["mean"], meta["std"])
    calibration = preprocess([train_images[i] for i in chosen])
    int8_summary = quantize_int8(onnx_path, int8_path, calibration)
    manifest = build_bundle(
        args.out,
        onnx_path,
        meta,
        args.rules,
        args.zoo / YUNET_FILE,
        int8_path=int8_path,
        precision=config.precision,
    )
    onnx_path.unlink()
    int8_path.unlink()

    images, labels, _ = load_faces(args.split, args.crops, ["test"])
    torch_logits, _ = predict(
        model, FaceSet(images, labels, meta["resize"]), meta["input_size"], device="cpu"
    )
    fp32 = Predictor(args.out, providers="cpu", precision="fp32")
    onnx_logits, onnx_features = fp32.classify(images)
    int8_net = Predictor(args.out, providers="cpu", precision="int8")
    int8_logits, int8_features = int8_net.classify(images)
    truth = np.asarray(labels)
    ferplus = fer2013_measured(args.fer2013, args.votes, "publictest", "ferplus")
    try:
        int8 = check_int8_parity(
            fp32.classify(list(ferplus.images))[0],
            int8_net.classify(list(ferplus.images))[0],
            ferplus.labels,
            config,
        )
    except ExportError:
        shutil.rmtree(args.out)  # no bundle that serves a failed int8 network is left behind
        raise
    int8.update(
        int8_summary,
        judged_on="ferplus_publictest_majority",
        sfew_test=int8_agreement(onnx_logits, int8_logits, truth),
        rule_votes_equal=rule_vote_agreement(fp32.explainer, onnx_features, int8_features),
    )
    metrics = {
        "parity_max_abs_diff": worst,
        "tolerance": config.tolerance,
        "batch_dim": batch_dim,
        "test_accuracy_torch": float((torch_logits.argmax(1) == truth).mean()),
        "test_accuracy_onnx": float((onnx_logits.argmax(1) == truth).mean()),
        "test_predictions_equal": int((torch_logits.argmax(1) == onnx_logits.argmax(1)).sum()),
        "test_faces": len(truth),
        "bundle_sha256": manifest["files"],
        "precision": config.precision,
        "int8": int8,
    }
    write_json(args.metrics, metrics)
    log.info(
        "export: parity %.2e, test accuracy torch %.4f / onnx %.4f; on FER+ int8 %.4f vs fp32 "
        "%.4f, agreement %.4f; serving %s",
        worst,
        metrics["test_accuracy_torch"],
        metrics["test_accuracy_onnx"],
        int8["accuracy_int8"],
        int8["accuracy_fp32"],
        int8["agreement"],
        config.precision,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
