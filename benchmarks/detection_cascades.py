"""Detection cascades compared on every SFEW frame: faces found, principal face, time.

Each cascade is a list of steps; the first step that finds any face wins (as
:meth:`ferops.faces.FaceDetector.detect` runs them). Every step runs at most once per frame
(results and times are cached), so a cascade's time on a frame is the sum of its steps' times up
to the winning one (all of them on a miss). Cascades: the shipped one (``params.yaml``
``prepare.faces``: YuNet, YuNet at 2× on a miss), HOG → YuNet, YuNet → dlib CNN (an offline
step), and the paper's dlib cascade (HOG → CNN → CNN at 2×, the choice before YuNet), against
which the principal face is compared (same face when the boxes overlap with IoU ≥ 0.5).

    python benchmarks/detection_cascades.py

Writes benchmarks/results/detection_cascades.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from ferops.config import setup_logging
from ferops.faces import DetectorStep, Face, FaceConfig, FaceDetector
from ferops.images import ImageDecodeError, read_image

log = logging.getLogger("benchmark")
ROOT = Path(__file__).resolve().parents[1]

STEPS = {
    "yunet": DetectorStep("yunet", 0, score_threshold=0.6),
    "yunet_2x": DetectorStep("yunet", 1, score_threshold=0.5),
    "hog_clahe": DetectorStep("hog", 0, "clahe"),
    "cnn_clahe": DetectorStep("cnn", 0, "clahe"),
    "cnn_2x_clahe": DetectorStep("cnn", 1, "clahe"),
}
CASCADES = {
    "yunet → yunet 2× (shipped)": ["yunet", "yunet_2x"],
    "hog → yunet → yunet 2×": ["hog_clahe", "yunet", "yunet_2x"],
    "yunet → yunet 2× → dlib cnn (offline)": ["yunet", "yunet_2x", "cnn_clahe"],
    "dlib hog → cnn → cnn 2× (paper, before)": ["hog_clahe", "cnn_clahe", "cnn_2x_clahe"],
}
REFERENCE = "dlib hog → cnn → cnn 2× (paper, before)"


def iou(a: list[int], b: list[int]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union else 0.0


def principal_box(faces: list[Face]) -> list[int] | None:
    return next((face.box() for face in faces if face.principal), None)


class StepCache:
    """The faces each step finds on one frame and its time (ms); each step runs at most once."""

    def __init__(self, detectors: dict[str, FaceDetector], rgb: np.ndarray) -> None:
        self.detectors, self.rgb = detectors, rgb
        self.done: dict[str, tuple[list[Face], float]] = {}

    def __call__(self, name: str) -> tuple[list[Face], float]:
        if name not in self.done:
            start = time.perf_counter()
            faces, _ = self.detectors[name].detect(self.rgb)
            self.done[name] = (faces, (time.perf_counter() - start) * 1000)
        return self.done[name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=Path, default=ROOT / "data/raw/sfew")
    parser.add_argument(
        "--yunet", type=Path, default=ROOT / "data/raw/zoo/face_detection_yunet_2023mar.onnx"
    )
    parser.add_argument("--limit", type=int, default=0, help="first N frames only (0 = all)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/detection_cascades.json"
    )
    args = parser.parse_args(argv)
    setup_logging()

    params = yaml.safe_load((ROOT / "params.yaml").read_text())["prepare"]["faces"]
    base = FaceConfig.from_section(params)
    shipped = list(base.cascade)
    if shipped != [STEPS[n] for n in CASCADES["yunet → yunet 2× (shipped)"]]:
        log.warning("params.yaml's cascade %s is not the one labelled shipped here", shipped)
    detectors = {
        name: FaceDetector(replace(base, cascade=(step,)), args.yunet)
        for name, step in STEPS.items()
    }

    frames = sorted(args.frames.rglob("*.webp")) + sorted(args.frames.rglob("*.jpg"))
    frames = frames[: args.limit] if args.limit else frames
    rows = {name: {"found": 0, "ms": [], "principal": []} for name in CASCADES}
    decoded = 0
    for path in tqdm(frames, desc="frames", unit="frame"):
        try:
            rgb = read_image(path)
        except ImageDecodeError:
            continue
        decoded += 1
        step = StepCache(detectors, rgb)
        for cascade, names in CASCADES.items():
            spent, box = 0.0, None
            for name in names:
                faces, ms = step(name)
                spent += ms
                if faces:
                    box = principal_box(faces)
                    break
            rows[cascade]["found"] += box is not None
            rows[cascade]["ms"].append(spent)
            rows[cascade]["principal"].append(box)

    reference = rows[REFERENCE]["principal"]
    result: dict = {
        "what": "SFEW frames through each detection cascade (first step with a face wins)",
        "command": "python benchmarks/detection_cascades.py " + " ".join(argv or sys.argv[1:]),
        "date": date.today().isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "frames": decoded,
        "reference_for_principal_agreement": REFERENCE,
        "cascades": {},
    }
    for cascade, row in rows.items():
        both = [(a, b) for a, b in zip(row["principal"], reference, strict=True) if a and b]
        same = sum(iou(a, b) >= 0.5 for a, b in both)
        ms = np.array(row["ms"])
        result["cascades"][cascade] = {
            "steps": [STEPS[n].__dict__ for n in CASCADES[cascade]],
            "found": row["found"],
            "detection_rate": round(row["found"] / max(decoded, 1), 4),
            "ms_per_frame": {
                q: round(float(np.percentile(ms, p)), 1)
                for q, p in (("p50", 50), ("p90", 90), ("p99", 99))
            }
            | {"max": round(float(ms.max()), 1)},
            "principal_agreement_with_reference": round(same / max(len(both), 1), 4),
            "frames_both_found": len(both),
        }
        log.info(
            "%s: %s",
            cascade,
            {k: v for k, v in result["cascades"][cascade].items() if k != "steps"},
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
