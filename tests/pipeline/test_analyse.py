"""`ferops analyse` on real SFEW frames and on a video written here from them: rows match
`Predictor.analyse`, bad files are reported and skipped, videos get a followed face, smoothed
probabilities, a timeline PNG and an annotated copy."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ferops.analyse import analyse_paths, follow_principal, sample_frames, smooth
from ferops.images import read_image
from ferops.inference import Predictor
from tests.bundles import make_bundle
from tests.paths import CLEAR_FRAMES, ROOT


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("analyse") / "b", seed=11)[0]


@pytest.fixture(scope="module")
def predictor(bundle: Path) -> Predictor:
    return Predictor(bundle, providers="cpu")


@pytest.fixture()
def frames(sfew_root: Path) -> list[Path]:
    """Two clear frames and the first three Sad frames (one of them may hold no face)."""
    return [sfew_root / name for name in CLEAR_FRAMES] + sorted((sfew_root / "Sad").glob("*"))[:3]


def _expected(predictor: Predictor, frames: list[Path]) -> dict[str, list[dict]]:
    return {frame.name: predictor.analyse(read_image(frame)) for frame in frames}


def _check_rows(rows: list[dict], expected: dict[str, list[dict]], labels: list[str]) -> None:
    got: dict[str, list[dict]] = {}
    for row in rows:
        got.setdefault(Path(row["file"]).name, []).append(row)
    assert {k for k, v in expected.items() if v} == set(got)
    for name, faces in expected.items():
        rows_of = sorted(got.get(name, []), key=lambda r: int(r["face"]))
        assert len(rows_of) == len(faces)
        for row, face in zip(rows_of, faces, strict=True):
            box = row["box"] if isinstance(row["box"], list) else json.loads(row["box"])
            assert box == face["box"]
            assert row["expression"] == face["expression"]
            assert str(row["principal"]) == str(face["principal"])
            probs = [float(row[c]) for c in labels]
            expected_probs = [face["probabilities"][c] for c in labels]
            np.testing.assert_allclose(probs, expected_probs, atol=2e-6)


def test_folder_to_csv_and_jsonl_matches_predictor(
    tmp_path: Path,
    bundle: Path,
    predictor: Predictor,
    frames: list[Path],
    bad_files: dict[str, Path],
) -> None:
    folder = tmp_path / "in"
    (folder / "nested").mkdir(parents=True)
    for i, frame in enumerate(frames):  # half of them one folder down: folders are recursive
        (folder / ("nested" if i % 2 else "") / frame.name).symlink_to(frame)
    (folder / "corrupt.webp").symlink_to(bad_files["corrupt"])
    (folder / "notes.txt").write_text("not a picture, not picked up from a folder")
    expected = _expected(predictor, frames)

    # The console script, as a user runs it: exit 0 despite the corrupt file, which is logged.
    out_csv = tmp_path / "out" / "faces.csv"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferops.analyse",
            "analyse",
            str(folder),
            "--bundle",
            str(bundle),
            "--out",
            str(out_csv),
            "--quiet",
            "--providers",
            "cpu",
            "--batch",
            "4",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "corrupt.webp" in done.stderr and "1 bad files skipped" in done.stderr
    assert f"{len(frames)} images, 0 videos" in done.stderr
    with open(out_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    _check_rows(rows, expected, predictor.labels)
    assert all(r["time_s"] == "" and r["frame"] == "0" and r["followed"] == "" for r in rows)

    # JSONL through the library call, batch 1 vs the CLI's 4: the same answers.
    out_jsonl = tmp_path / "faces.jsonl"
    summary = analyse_paths(predictor, [folder], out_jsonl, batch_size=1, progress=False)
    rows = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    _check_rows(rows, expected, predictor.labels)
    assert summary.bad == {str(folder / "corrupt.webp"): "corrupt"}
    assert summary.images == len(frames) and summary.faces == len(rows)


def _write_video(
    path: Path, frames: list[Path], seconds_each: float, fps: int, fourcc: str
) -> None:
    size = (480, 360)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"this OpenCV cannot write {fourcc}"
    for frame in frames:
        bgr = cv2.cvtColor(cv2.resize(read_image(frame), size), cv2.COLOR_RGB2BGR)
        for _ in range(round(seconds_each * fps)):
            writer.write(bgr)
    writer.release()


def test_video_timeline_and_annotation(
    tmp_path: Path, predictor: Predictor, sfew_root: Path
) -> None:
    # mp4v (.mp4) and MJPG (.avi) are what this OpenCV build writes; avc1 / H.264 is not.
    video = tmp_path / "clip.mp4"
    clear = [sfew_root / name for name in CLEAR_FRAMES]
    _write_video(video, clear, seconds_each=2.0, fps=10, fourcc="mp4v")
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"RIFF....AVI not really a video" * 50)

    out = tmp_path / "video.jsonl"
    annotated = tmp_path / "annotated.mp4"
    summary = analyse_paths(
        predictor, [video, broken], out, fps=2.0, smooth_s=1.0, annotate=annotated, progress=False
    )
    assert summary.bad == {str(broken): "unreadable_video"}
    assert summary.videos == 2 and summary.frames == 8  # 4 s at 2 frames a second

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    followed = [r for r in rows if r["followed"]]
    times = [r["time_s"] for r in followed]
    assert times == sorted(times) and len(set(times)) == len(times) and len(times) >= 6
    assert [r["frame"] for r in followed] == sorted(r["frame"] for r in followed)
    for row in followed:
        smoothed = [row[f"smoothed_{c}"] for c in predictor.labels]
        assert abs(sum(smoothed) - 1) < 1e-4
        assert row["smoothed_expression"] == predictor.labels[int(np.argmax(smoothed))]

    # The rows are Predictor.analyse's answers on the sampled frames.
    sampled = {index: rgb for index, _, rgb in sample_frames(video, 2.0)}
    for row in followed:
        face = predictor.analyse(sampled[row["frame"]])[row["face"]]
        assert (row["box"], row["expression"]) == (face["box"], face["expression"])

    (timeline,) = summary.timelines
    assert Path(timeline) == tmp_path / "video-timelines" / "clip.png"
    with Image.open(timeline) as img:
        img.verify()
        assert img.format == "PNG" and img.size[0] > 300
    # Two videos were given (one broken): the annotated copy is named after its video.
    annotated = tmp_path / "annotated.clip.mp4"
    capture = cv2.VideoCapture(str(annotated))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert summary.annotated == [str(annotated)] and count == 8


def test_follow_principal_keeps_the_same_face_and_smooth_is_centred() -> None:
    a, b = [0, 0, 100, 100], [200, 0, 300, 100]
    frames = [
        [{"box": a, "principal": True}, {"box": b, "principal": False}],
        [
            {"box": [205, 0, 305, 100], "principal": True},
            {"box": [5, 0, 105, 100], "principal": False},
        ],
        [],
        [{"box": [500, 500, 600, 600], "principal": True}],  # lost: the detector's principal
    ]
    assert follow_principal(frames) == [0, 1, None, 0]

    probs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    out = smooth([0.0, 0.5, 1.0, 3.0], probs, window_s=1.0)
    np.testing.assert_allclose(out[0], [0.5, 0.5])  # itself and 0.5 s
    np.testing.assert_allclose(out[1], [2 / 3, 1 / 3])  # 0, 0.5 and 1.0 s
    np.testing.assert_allclose(out[3], [1.0, 0.0])  # alone: a gap is not filled
    np.testing.assert_allclose(smooth([0, 1], probs[:2], 0), probs[:2])
