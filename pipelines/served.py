"""Stage ``served``: the exported bundle scored the way the service answers, nothing dropped.

* every test-split SFEW frame through detection (decode → cascade → principal face → label);
* the same faces cut tight to the detector's box and sent as ``crop=true`` crops;
* FER2013 public test (48 px JPEGs as a user would upload them) as ``crop=true`` crops, scored
  against FER2013's folder labels and, on the faces with one, the FER+ majority
  (:func:`ferops.ferplus.majority_labels`; FER+'s votes joined by file path).

A face not found counts as wrong. Writes ``metrics/served.json``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from ferops.config import setup_logging, write_json
from ferops.data import CLASSES, read_csv
from ferops.fer2013 import load_paths
from ferops.ferplus import NO_LABEL, join_votes, majority_labels, read_votes
from ferops.inference import Predictor
from ferops.served_metrics import score_images, served_metrics

log = logging.getLogger("served")


def tight_crops(rows: list[dict[str, str]], frames: list[bytes]) -> list[bytes]:
    """PNG bytes of each row's principal face cut exactly to its detector box (no margin)."""
    out = []
    for row, data in zip(rows, frames, strict=True):
        left, top, right, bottom = map(int, row["box"].split())
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        out.append(cv2.imencode(".png", frame[top:bottom, left:right])[1].tobytes())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--fer2013", type=Path, required=True)
    parser.add_argument("--votes", type=Path, required=True, help="FER+'s votes.csv")
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    predictor = Predictor(args.bundle, providers="cpu")
    test = {r["image_id"] for r in read_csv(args.split) if r["split"] == "test"}
    rows = [r for r in read_csv(args.manifest) if r["image_id"] in test]  # path and box
    truth = [int(r["label_index"]) for r in rows]
    frames = [(args.raw / r["path"]).read_bytes() for r in rows]  # read once, scored twice
    predicted, millis = score_images(predictor, frames, is_crop=False, desc="sfew test frames")
    report = {
        **served_metrics(truth, predicted),
        "locate_ms_p50": round(float(np.percentile(millis, 50)), 1),
        "locate_ms_p99": round(float(np.percentile(millis, 99)), 1),
    }
    predicted, _ = score_images(
        predictor, tight_crops(rows, frames), is_crop=True, desc="sfew tight crops"
    )
    report["sfew_test_tight_crops"] = served_metrics(truth, predicted)

    paths, labels = load_paths(args.fer2013, "publictest")
    predicted, _ = score_images(
        predictor, (p.read_bytes() for p in paths), is_crop=True, desc="fer2013 publictest crops"
    )
    report["fer2013_publictest_crop"] = served_metrics(labels, predicted)
    report["fer2013_publictest_crop_accuracy"] = report["fer2013_publictest_crop"]["accuracy"]
    names = [p.relative_to(args.fer2013).as_posix() for p in paths]
    majority = majority_labels(join_votes(read_votes(args.votes), names))
    measured = np.flatnonzero(majority != NO_LABEL)
    report["ferplus_publictest_crop"] = served_metrics(
        majority[measured], np.asarray(predicted)[measured]
    )
    report["ferplus_publictest_crop_accuracy"] = report["ferplus_publictest_crop"]["accuracy"]
    report["classes"] = list(CLASSES)
    write_json(args.metrics, report)
    log.info(
        "served: SFEW test frames %.4f (%d/%d faces found), tight crops %.4f, FER2013 public "
        "test crops %.4f, FER+ majority %.4f",
        report["accuracy"],
        report["faces_found"],
        report["n"],
        report["sfew_test_tight_crops"]["accuracy"],
        report["fer2013_publictest_crop_accuracy"],
        report["ferplus_publictest_crop_accuracy"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
