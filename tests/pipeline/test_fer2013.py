"""FER2013 import on real files (symlinked) plus a corrupt one: arrays, labels, quarantine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from ferops.data import CLASSES, read_csv
from tests.paths import RAW_ZOO


def test_fer2013_stage_on_a_real_subset(tmp_path: Path, fer_root: Path) -> None:
    from pipelines import fer2013

    raw = tmp_path / "fer"
    expected = {}
    for split in ("train", "publictest"):
        for label in CLASSES:
            files = sorted((fer_root / split / label).iterdir())[:3]
            (raw / split / label).mkdir(parents=True)
            for path in files:
                (raw / split / label / path.name).symlink_to(path)
        expected[split] = 3 * len(CLASSES)
    (raw / "train" / "Angry" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")

    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({"fer2013": {"size": 48}, "prepare": {"faces": {"size": 64}}})
    )
    out, metrics = tmp_path / "out", tmp_path / "m.json"
    argv = [
        "--params",
        str(params),
        "--raw",
        str(raw),
        "--zoo",
        str(RAW_ZOO),
        "--out",
        str(out),
        "--metrics",
        str(metrics),
    ]
    assert fer2013.main(argv) == 0

    arrays = np.load(out / "fer2013.npz")
    # every face becomes a 64 px chip of the framing contract (aligned where YuNet finds it)
    assert arrays["x_train"].shape == (expected["train"], 64, 64)
    assert arrays["x_publictest"].shape == (expected["publictest"], 64, 64)
    assert arrays["x_train"].dtype == np.uint8
    assert sorted(set(arrays["y_train"].tolist())) == list(range(len(CLASSES)))
    rows = read_csv(out / "manifest.csv")
    broken = [r for r in rows if r["path"].endswith("broken.jpg")]
    assert broken and broken[0]["status"] == "quarantined"
    report = json.loads(metrics.read_text())
    assert report["train"]["quarantined"] == 1
    assert report["train"]["unaligned"] <= 1 and report["publictest"]["unaligned"] <= 1
    assert report["train"]["per_class"]["Angry"] == 3
