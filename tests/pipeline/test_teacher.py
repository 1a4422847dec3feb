"""The teacher's preprocessing on a known face: landmarks → our chip → the teacher's 112-px
template → the expected class on an obvious smile; and the chip-to-teacher warp is exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ferops.data import CLASSES
from ferops.faces import FaceConfig, FaceDetector, similarity, template_points
from ferops.images import read_image, to_gray
from ferops.teacher import TEACHER_FILE, TEACHER_SIZE, TEACHER_TEMPLATE, Teacher, teacher_input
from tests.paths import CLEAR_FRAMES, RAW_ZOO


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    path = RAW_ZOO / TEACHER_FILE
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make setup` (it pulls the zoo data with DVC)")
    return Teacher(path)


def test_chip_landmarks_land_on_the_teachers_template() -> None:
    matrix = similarity(template_points(64, 0.0), TEACHER_TEMPLATE)
    mapped = template_points(64, 0.0) @ matrix[:, :2].T + matrix[:, 2]
    # both templates are faces: one similarity takes ours onto the teacher's within 3 px of 112
    # (FER2013's median face and the zoo's template differ a little in proportions)
    assert np.hypot(*(mapped - TEACHER_TEMPLATE).T).max() < 3.0


def test_teacher_input_is_rgb_112_in_minus_one_to_one() -> None:
    x = teacher_input([np.full((64, 64), 255, np.uint8), np.zeros((80, 80), np.uint8)], 0.0)
    assert x.shape == (2, 3, TEACHER_SIZE, TEACHER_SIZE) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], 1.0)
    np.testing.assert_allclose(x[1], -1.0)


def test_teacher_sees_the_obvious_smile(
    teacher: Teacher, yunet: Path, sfew_root: Path, fer_root: Path
) -> None:
    detector = FaceDetector(FaceConfig(), yunet)
    rgb = read_image(sfew_root / CLEAR_FRAMES[0])  # Happy: a broad smile, frontal
    face = next(f for f in detector.detect(rgb)[0] if f.principal)
    logits = teacher.logits([detector.crop(rgb, face)], 0.0)
    assert CLASSES[int(logits[0].argmax())] == "Happy"
    smiles = sorted((fer_root / "publictest" / "Happy").iterdir())[:5]
    chips = [detector.chip_from_crop(to_gray(read_image(p))) for p in smiles]
    assert all(c is not None for c in chips)
    assert [CLASSES[i] for i in teacher.logits(chips, 0.0).argmax(1)] == ["Happy"] * 5
