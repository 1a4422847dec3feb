"""Scoring the served path: images through :class:`~ferops.inference.Predictor` exactly as the
service answers them (decode → detection cascade → principal face → chip → network), where a
face not found counts as a wrong answer — nothing is silently dropped."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from ferops.data import CLASSES
from ferops.images import decode_image
from ferops.inference import Predictor

#: The prediction recorded for an image where no face was found (always wrong).
NO_FACE = -1


def served_metrics(truth: Sequence[int], predicted: Sequence[int]) -> dict[str, Any]:
    """Accuracy over every image (no face = wrong), faces found, and recall per class."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if truth.shape != predicted.shape or not len(truth):
        raise ValueError("need as many predictions as labels, and at least one")
    recall = {
        c: round(float((predicted[truth == i] == i).mean()), 4)
        for i, c in enumerate(CLASSES)
        if np.any(truth == i)
    }
    return {
        "accuracy": round(float((predicted == truth).mean()), 4),
        "n": len(truth),
        "faces_found": int((predicted != NO_FACE).sum()),
        "recall": recall,
    }


def principal_label(records: list[dict[str, Any]], labels: Sequence[str]) -> int:
    """Class index of the principal face of one image's records, :data:`NO_FACE` if none."""
    for record in records:
        if record["principal"]:
            return labels.index(record["expression"])
    return NO_FACE


def score_images(
    predictor: Predictor,
    images: Iterable[bytes],
    is_crop: bool,
    desc: str = "served",
    batch: int = 256,
) -> tuple[list[int], list[float]]:
    """The principal face's class of each encoded image (:data:`NO_FACE` when none) and the
    milliseconds each image spent in decoding and locating (the per-request CPU work); the
    network runs in batches of ``batch`` faces, as the service's batching classifier does."""
    predicted: list[int] = []
    millis: list[float] = []
    pending: list[tuple[int, list[dict], list[np.ndarray]]] = []

    def flush() -> None:
        crops = [c for _, _, cs in pending for c in cs]
        if crops:
            logits, features = predictor.classify(crops)
            start = 0
            for index, faces, cs in pending:
                n = len(cs)
                records = predictor.describe(
                    faces, logits[start : start + n], features[start : start + n]
                )
                predicted[index] = principal_label(records, predictor.labels)
                start += n
        pending.clear()

    for data in tqdm(images, desc=desc, unit="image", mininterval=5):
        t0 = time.perf_counter()
        faces, crops = predictor.locate(decode_image(data), is_crop)
        millis.append((time.perf_counter() - t0) * 1000)
        predicted.append(NO_FACE)
        if crops:
            pending.append((len(predicted) - 1, faces, crops))
        if sum(len(c) for _, _, c in pending) >= batch:
            flush()
    flush()
    return predicted, millis
