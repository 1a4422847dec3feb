"""The prepare stage on real SFEW frames plus synthetic bad files: faces found, bad files
quarantined with a reason, label conflicts excluded, the stage never stops early."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from ferops.data import read_csv, scan_frames
from ferops.faces import (
    Face,
    FaceConfig,
    FaceDetector,
    choose_principal,
    drop_nested,
    square_crop,
)
from ferops.images import read_image
from tests.paths import CLEAR_FRAMES, RAW_ZOO

#: The paper's dlib HOG detector (still available in params.yaml); landmarks come from YuNet
#: inside each HOG box, so the chips follow the same framing contract.
FAST_FACES = {"cascade": [{"detector": "hog", "upsample": 0}], "size": 64}


def test_face_found_in_clear_frames(sfew_root: Path, yunet: Path) -> None:
    detector = FaceDetector(FaceConfig.from_section(FAST_FACES), yunet)
    for rel in CLEAR_FRAMES:
        rgb = read_image(sfew_root / rel)
        faces, step = detector.detect(rgb)
        assert faces and step == 0, rel
        principal = [f for f in faces if f.principal]
        assert len(principal) == 1
        assert 40 <= principal[0].width <= 400
        crop = detector.crop(rgb, principal[0])
        assert crop.shape == (64, 64) and crop.dtype == np.uint8
        assert crop.std() > 10  # a face, not a flat patch


def test_blank_frame_has_no_face() -> None:
    detector = FaceDetector(FaceConfig.from_section(FAST_FACES))  # detection alone needs no YuNet
    assert detector.detect(np.zeros((200, 300, 3), np.uint8)) == ([], -1)


def test_principal_prefers_big_central_face() -> None:
    config = FaceConfig()
    small_corner = Face(0, 0, 40, 40, score=2.0, detector="hog")
    big_centre = Face(300, 220, 420, 340, score=0.5, detector="hog")
    assert choose_principal([small_corner, big_centre], (576, 720), config) == 1
    only_score = FaceConfig(principal_area=0, principal_centrality=0, principal_score=1)
    assert choose_principal([small_corner, big_centre], (576, 720), only_score) == 0


def test_nested_duplicate_boxes_are_dropped_but_neighbours_kept() -> None:
    face = Face(100, 100, 200, 200, 1.0, "cnn")
    chin = Face(130, 160, 180, 210, 1.2, "cnn")  # mostly inside the face
    neighbour = Face(205, 100, 300, 195, 0.9, "cnn")
    kept = drop_nested([chin, face, neighbour], max_overlap=0.5)
    assert [f.box() for f in kept] == [face.box(), neighbour.box()]


def test_square_crop_pads_at_the_border() -> None:
    gray = np.full((100, 100), 200, np.uint8)
    crop = square_crop(gray, [0, 0, 30, 30], margin=0.5, size=32)
    assert crop.shape == (32, 32) and (crop == 200).all()


def test_bad_settings_name_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="hog"):
        FaceConfig.from_section({"cascade": [{"detector": "yolo"}]})
    with pytest.raises(ValueError, match="valid"):
        FaceConfig.from_section({"colour": True})


@pytest.fixture()
def small_raw(tmp_path: Path, sfew_root: Path, bad_files: dict[str, Path]) -> Path:
    """A raw folder of symlinks to real frames, the documented Fear/Surprise duplicate, and bad
    files (no image data is copied out of the DVC-pulled folder)."""
    raw = tmp_path / "raw"
    picks = list(CLEAR_FRAMES) + [
        "Fear/HarryPotter_Deathly_Hallows_1_001610960_00000028.webp",
        "Surprise/HarryPotter_Deathly_Hallows_1_001610960_00000028.webp",
    ]
    picks += [f"{f.label}/{f.path.name}" for f in scan_frames(sfew_root)[::97]]
    for rel in dict.fromkeys(picks):
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).symlink_to(sfew_root / rel)
    for reason, path in bad_files.items():
        (raw / "Sad").mkdir(parents=True, exist_ok=True)
        path.rename(raw / "Sad" / f"{reason}_000001_00000001.webp")
    return raw


@pytest.mark.parametrize("no_face", ["skip", "centre"])
def test_prepare_stage_end_to_end(tmp_path: Path, small_raw: Path, no_face: str) -> None:
    from pipelines import prepare

    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({"prepare": {"faces": FAST_FACES, "no_face": no_face, "workers": 2}})
    )
    out, metrics_path = tmp_path / "prepared", tmp_path / "metrics.json"
    sheet = tmp_path / "sheet.png"
    assert (
        prepare.main(
            [
                "--params",
                str(params),
                "--raw",
                str(small_raw),
                "--zoo",
                str(RAW_ZOO),
                "--out",
                str(out),
                "--metrics",
                str(metrics_path),
                "--sheet",
                str(sheet),
            ]
        )
        == 0
    )

    rows = {r["image_id"]: r for r in read_csv(out / "manifest.csv")}
    assert len(rows) == len(list(small_raw.rglob("*.webp")))
    for reason in ("empty", "corrupt", "not_an_image"):
        row = rows[f"Sad/{reason}_000001_00000001"]
        assert (row["status"], row["reason"]) == ("quarantined", reason)
    stem = "HarryPotter_Deathly_Hallows_1_001610960_00000028"
    assert rows[f"Fear/{stem}"]["status"] == rows[f"Surprise/{stem}"]["status"] == "label_conflict"
    for rel in CLEAR_FRAMES:
        row = rows[rel.removesuffix(".webp")]
        assert row["status"] == "face" and int(row["faces_found"]) >= 1
        crop = cv2.imread(str(out / "faces" / row["crop"]), cv2.IMREAD_GRAYSCALE)
        assert crop.shape == (64, 64)
        assert len(json.loads(row["candidates"])) == int(row["faces_found"])

    quarantine = read_csv(out / "quarantine.csv")
    assert {q["reason"] for q in quarantine} == {
        "empty",
        "corrupt",
        "not_an_image",
        "label_conflict",
    }
    metrics = json.loads(metrics_path.read_text())
    assert metrics["quarantined"] == 3 and metrics["label_conflicts"] == 2
    assert metrics["decoded"] == len(rows) - 5
    assert 0 < metrics["detection_rate"] <= 1
    usable = [r for r in rows.values() if r["status"] in ("face", "centre")]
    assert metrics["usable"] == len(usable)
    if no_face == "centre":
        assert metrics["centre_crops"] == metrics["no_face"]
    else:
        assert metrics["centre_crops"] == 0
    assert cv2.imread(str(sheet)) is not None
