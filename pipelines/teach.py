"""Stage ``teach``: the zoo's RAF-DB expression model (the teacher) on every FER2013 face and every
usable SFEW face chip → its logits, for distillation in ``pretrain`` / ``train``. Two files:
FER2013's logits (``--out-fer2013``, all ``pretrain`` reads: nothing SFEW-derived among its
inputs, so a change of the SFEW chips never reruns pre-training) and the SFEW chips'
(``--out-sfew``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ferops.config import load_section, setup_logging, write_json
from ferops.data import load_gray, read_csv
from ferops.faces import FaceConfig
from ferops.prepare import USABLE
from ferops.teacher import TEACHER_FILE, Teacher

log = logging.getLogger("teach")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--fer2013", type=Path, required=True)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--out-fer2013", type=Path, required=True)
    parser.add_argument("--out-sfew", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()

    margin = FaceConfig.from_section(load_section(args.params, "prepare").get("faces", {})).margin
    teacher = Teacher(args.zoo / TEACHER_FILE)
    fer = np.load(args.fer2013)
    rows = [r for r in read_csv(args.prepared / "manifest.csv") if r["status"] in USABLE]
    chips = [load_gray(args.prepared / "faces" / r["crop"]) for r in rows]
    out = {
        f"fer2013_{split}": teacher.logits(list(fer[f"x_{split}"]), margin, f"teach {split}")
        for split in ("train", "publictest")
    }
    sfew = {
        "sfew": teacher.logits(chips, margin, "teach sfew"),
        "sfew_ids": np.array([r["image_id"] for r in rows]),
    }
    for path, arrays in ((args.out_fer2013, out), (args.out_sfew, sfew)):
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **arrays)
    out.update(sfew)
    labels = {
        "fer2013_train": fer["y_train"],
        "fer2013_publictest": fer["y_publictest"],
        "sfew": np.array([int(r["label_index"]) for r in rows]),
    }
    metrics = {
        f"{key}_accuracy": round(float((out[key].argmax(1) == y).mean()), 4)
        for key, y in labels.items()
    }
    metrics.update(faces={key: len(y) for key, y in labels.items()})
    write_json(args.metrics, metrics)
    log.info("teacher accuracy: %s", metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
