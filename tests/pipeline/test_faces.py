"""The framing contract on real faces: YuNet finds and aligns them, a crop of any tightness becomes
the same chip, and a crop with no face in it gives none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ferops.faces import TEMPLATE, FaceConfig, FaceDetector, similarity, template_points
from ferops.images import read_image, to_gray
from tests.paths import CLEAR_FRAMES

YUNET_FACES = {"cascade": [{"detector": "yunet"}], "size": 64}


@pytest.fixture(scope="module")
def detector(yunet: Path) -> FaceDetector:
    return FaceDetector(FaceConfig.from_section(YUNET_FACES), yunet)


def test_similarity_recovers_a_known_transform() -> None:
    angle, scale, shift = np.deg2rad(20), 1.7, np.array([5.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = np.random.default_rng(0).uniform(0, 50, (5, 2))
    matrix = similarity(src, src @ rot.T + shift)
    np.testing.assert_allclose(matrix[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_yunet_finds_clear_faces_and_their_chip_puts_landmarks_on_the_template(
    detector: FaceDetector, sfew_root: Path
) -> None:
    for rel in CLEAR_FRAMES:
        rgb = read_image(sfew_root / rel)
        faces, step = detector.detect(rgb)
        assert step == 0 and sum(f.principal for f in faces) == 1, rel
        face = next(f for f in faces if f.principal)
        assert len(face.landmarks) == 5 and 40 <= face.width <= 400
        chip = detector.crop(rgb, face)
        assert chip.shape == (64, 64) and chip.dtype == np.uint8 and chip.std() > 10
        # the landmarks found again inside the chip sit on the template (a least-squares fit:
        # a turned head leaves its nose a few pixels off)
        again = detector.crop_landmarks(chip)
        assert again is not None
        error = np.hypot(*(again - template_points(64, 0.0)).T)
        assert error.mean() < 4 and error.max() < 6, (rel, error)


def test_a_crop_of_any_tightness_is_aligned_on_the_same_landmarks(
    detector: FaceDetector, sfew_root: Path
) -> None:
    for rel in CLEAR_FRAMES:
        rgb = read_image(sfew_root / rel)
        gray = to_gray(rgb)
        face = next(f for f in detector.detect(rgb)[0] if f.principal)
        truth = np.asarray(face.landmarks)
        eyes = float(np.hypot(*(truth[1] - truth[0])))
        # cut to the detector's box, some context, a loose head-and-shoulders crop
        for grow in (0.0, 0.3, 1.0):
            g = round(grow * face.width)
            x0, y0 = max(face.left - g, 0), max(face.top - g, 0)
            found = detector.crop_landmarks(gray[y0 : face.bottom + g, x0 : face.right + g])
            assert found is not None, (rel, grow)
            error = np.hypot(*(found + (x0, y0) - truth).T).mean() / eyes
            assert error < 0.2, (rel, grow, error)  # a fifth of the eye distance, on average
            chip = detector.chip_from_crop(gray[y0 : face.bottom + g, x0 : face.right + g])
            assert chip is not None and chip.shape == (64, 64)


def test_fer2013_faces_are_found_inside_their_48px_crops(
    detector: FaceDetector, fer_root: Path
) -> None:
    paths = sorted((fer_root / "publictest" / "Happy").iterdir())[:20]
    chips = [detector.chip_from_crop(to_gray(read_image(p))) for p in paths]
    assert sum(c is not None for c in chips) >= 19  # YuNet finds ~99 % of FER2013 faces
    assert all(c.shape == (64, 64) for c in chips if c is not None)


NO_FACE_CROPS = [
    np.zeros((96, 96), np.uint8),
    np.full((48, 48), 200, np.uint8),
    np.random.default_rng(1).integers(0, 256, (96, 96), dtype=np.uint8),
    np.zeros((1, 1), np.uint8),
    np.zeros((4, 400), np.uint8),
]


@pytest.mark.parametrize(
    "crop", NO_FACE_CROPS, ids=["black", "flat", "noise", "one_pixel", "sliver"]
)
def test_a_crop_without_a_face_gives_no_chip(detector: FaceDetector, crop: np.ndarray) -> None:
    assert detector.chip_from_crop(crop) is None


def test_template_is_symmetric_so_a_flipped_chip_is_a_chip() -> None:
    mirrored = np.column_stack([1 - TEMPLATE[:, 0], TEMPLATE[:, 1]])[[1, 0, 2, 4, 3]]
    np.testing.assert_allclose(mirrored, TEMPLATE, atol=1e-9)
