"""Batch scoring on Spark (`ferops score`, local[2]) with the registered champion of a real
`mlflow server` on PostgreSQL: the Parquet rows equal `ferops.inference` on the same bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferops.images import read_image
from ferops.inference import Predictor
from ferops.processes import stop_process_group
from tests.bundles import register_tiny
from tests.paths import ROOT

#: Every 12th SFEW frame: 57 frames of all 7 classes.
EVERY = 12


def test_spark_scores_frames_like_the_predictor(
    mlflow_server: str,
    sfew_root: Path,
    bad_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pyarrow.parquet as pq

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = "ferops-test-spark"
    bundle, _, decision = register_tiny(
        mlflow_server, tmp_path / "model", 31, name, "scoring-tests"
    )
    assert decision["alias"] == "champion"

    images = tmp_path / "images"
    images.mkdir()
    frames = sorted(sfew_root.glob("*/*.webp"))[::EVERY]
    assert len(frames) >= 50
    for frame in frames:
        (images / f"{frame.parent.name}_{frame.name}").write_bytes(frame.read_bytes())
    (images / "corrupt.webp").write_bytes(bad_files["corrupt"].read_bytes())

    out = tmp_path / "scored.parquet"
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=mlflow_server,
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    )
    cmd = [
        sys.executable,
        "-m",
        "ferops.analyse",
        "score",
        str(images),
        "--out",
        str(out),
        "--model",
        f"models:/{name}@champion",
        "--master",
        "local[2]",
        "--driver-memory",
        "1g",
    ]
    # Its own process: the JVM and Spark's Python workers end with it.
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        log, _ = proc.communicate(timeout=600)
    finally:
        stop_process_group(proc)
    assert proc.returncode == 0, log[-4000:]

    rows = {row["path"]: row for row in pq.read_table(out).to_pylist()}
    assert len(rows) == len(frames) + 1
    predictor = Predictor(bundle)
    faces_seen = 0
    for file in sorted(images.iterdir()):
        row = rows[f"file:{file}"]
        if file.name == "corrupt.webp":
            assert (len(row["faces"]), row["error"]) == (0, "corrupt")
            continue
        expected = predictor.analyse(read_image(file))
        # Labels, the 7 probabilities, boxes, scores and principal flags, exactly.
        assert row["faces"] == expected, file.name
        assert row["error"] is None and row["reason"] == (None if expected else "no_face")
        faces_seen += len(expected)
    assert faces_seen >= 50
