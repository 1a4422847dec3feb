"""How far does the FER2013 network carry to SFEW without fine-tuning? Two cheap baselines on
the same clip-grouped split and folds as the pipeline:

- zero-shot: the pre-trained FER2013 classifier (same 7 classes) applied to SFEW faces as is;
- linear probe: a logistic regression on its frozen 512 features (train split → val / test, and
  the k folds).

    python benchmarks/transfer_probe.py --pretrained models/pretrain.pt

Each face is seen centred at a few zooms (``--zooms``: the fraction of the 256 px crop kept
before resizing to the network's input) and averaged with its mirror image. Writes
benchmarks/results/transfer_probe.json. About two minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ferops.config import setup_logging
from ferops.data import load_faces
from ferops.model import FerResNet, load_checkpoint
from ferops.training import to_tensor

log = logging.getLogger("transfer_probe")


def centre_view(image: np.ndarray, zoom: float, side: int, mirror: bool) -> np.ndarray:
    """The centred square holding ``zoom`` of the shorter side, resized to ``side``."""
    height, width = image.shape
    keep = round(min(height, width) * zoom)
    y0, x0 = (height - keep) // 2, (width - keep) // 2
    view = cv2.resize(
        image[y0 : y0 + keep, x0 : x0 + keep], (side, side), interpolation=cv2.INTER_AREA
    )
    return view[:, ::-1] if mirror else view


@torch.no_grad()
def network_outputs(model: FerResNet, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(softmax N×7, features N×512) of gray uint8 faces N×S×S."""
    probs, feats = [], []
    for start in range(0, len(faces), 128):
        logits, feat = model.forward_features(to_tensor(faces[start : start + 128]))
        probs.append(torch.softmax(logits, 1).numpy())
        feats.append(feat.numpy())
    return np.concatenate(probs), np.concatenate(feats)


def probe_accuracy(
    feats: tuple[np.ndarray, np.ndarray],
    labels: np.ndarray,
    fit_rows: np.ndarray,
    score_rows: np.ndarray,
    c: float,
) -> float:
    """Logistic regression fitted on ``fit_rows`` (both mirror views), scored on ``score_rows``
    with the two views' probabilities summed."""
    x = np.concatenate([f[fit_rows] for f in feats])
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
    clf.fit(scaler.transform(x), np.concatenate([labels[fit_rows]] * len(feats)))
    prob = sum(clf.predict_proba(scaler.transform(f[score_rows])) for f in feats)
    return float((prob.argmax(1) == labels[score_rows]).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", type=Path, default=Path("data/split/split.csv"))
    parser.add_argument("--crops", type=Path, default=Path("data/prepared/faces"))
    parser.add_argument("--pretrained", type=Path, default=Path("models/pretrain.pt"))
    parser.add_argument("--zooms", type=float, nargs="+", default=[0.8, 0.89, 1.0])
    parser.add_argument("--c", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/transfer_probe.json"))
    args = parser.parse_args(argv)
    setup_logging()

    model, meta = load_checkpoint(args.pretrained)
    model.eval()
    side = int(meta["input_size"])
    images, label_list, rows = load_faces(args.split, args.crops)
    labels = np.asarray(label_list)
    split = np.array([r["split"] for r in rows])
    folds = np.array([int(r["fold"]) for r in rows])

    results = []
    for zoom in args.zooms:
        outputs = [
            network_outputs(model, np.stack([centre_view(i, zoom, side, m) for i in images]))
            for m in (False, True)
        ]
        prob = outputs[0][0] + outputs[1][0]
        feats = (outputs[0][1], outputs[1][1])
        row = {
            "zoom": zoom,
            "zero_shot": {
                s: round(float((prob.argmax(1) == labels)[split == s].mean()), 4)
                for s in ("train", "val", "test")
            },
            "probe": [],
        }
        for c in args.c:
            cv = [
                probe_accuracy(feats, labels, folds != k, folds == k, c)
                for k in sorted(set(folds))
            ]
            row["probe"].append(
                {
                    "C": c,
                    "val": round(
                        probe_accuracy(feats, labels, split == "train", split == "val", c), 4
                    ),
                    "test": round(
                        probe_accuracy(feats, labels, split == "train", split == "test", c), 4
                    ),
                    "cv_mean": round(float(np.mean(cv)), 4),
                    "cv_std": round(float(np.std(cv, ddof=1)), 4),
                }
            )
        log.info("zoom %.2f: zero-shot %s, probe %s", zoom, row["zero_shot"], row["probe"])
        results.append(row)
    out = {
        "pretrained": str(args.pretrained),
        "input_size": side,
        "faces": len(labels),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
