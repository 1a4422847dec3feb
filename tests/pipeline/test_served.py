"""The served-path scores: a face not found is a wrong answer, never a dropped one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ferops.inference import Predictor
from ferops.served_metrics import NO_FACE, score_images, served_metrics
from tests.bundles import make_bundle
from tests.paths import CLEAR_FRAMES, png_bytes


def test_no_face_counts_as_wrong() -> None:
    metrics = served_metrics([3, 3, 0, 6], [3, NO_FACE, 0, 2])
    assert metrics["accuracy"] == 0.5 and metrics["n"] == 4 and metrics["faces_found"] == 3
    assert metrics["recall"] == {"Angry": 1.0, "Happy": 0.5, "Surprise": 0.0}
    with pytest.raises(ValueError):
        served_metrics([1, 2], [1])


def test_scores_follow_the_service_path(tmp_path: Path, sfew_root: Path, fer_root: Path) -> None:
    bundle, _ = make_bundle(tmp_path / "b", seed=3)
    predictor = Predictor(bundle, providers="cpu")
    frame = (sfew_root / CLEAR_FRAMES[0]).read_bytes()
    blank = png_bytes(np.full((120, 160, 3), 128, np.uint8))
    crop = min((fer_root / "publictest" / "Happy").iterdir()).read_bytes()
    predicted, millis = score_images(predictor, [frame, blank], is_crop=False, batch=1)
    assert predicted[1] == NO_FACE and predicted[0] != NO_FACE and len(millis) == 2
    record = next(r for r in predictor.analyse(predictor_rgb(frame)) if r["principal"])
    assert predicted[0] == predictor.labels.index(record["expression"])
    crops, _ = score_images(predictor, [crop, blank], is_crop=True)
    assert crops[0] != NO_FACE and crops[1] == NO_FACE


def predictor_rgb(data: bytes) -> np.ndarray:
    from ferops.images import decode_image

    return decode_image(data)
