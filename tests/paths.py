"""Where the test data lives (pulled by DVC from ../shared) and small helpers shared by every
layer; fixtures are in the conftest.py files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RAW_SFEW = ROOT / "data" / "raw" / "sfew"
RAW_FER = ROOT / "data" / "raw" / "fer2013"
RAW_ZOO = ROOT / "data" / "raw" / "zoo"
RAW_FERPLUS = ROOT / "data" / "raw" / "ferplus"

#: Frames where the face is large, frontal and well lit (dlib HOG finds it at upsample 0).
CLEAR_FRAMES = (
    "Happy/ACaseofYou_000608400_00000006.webp",
    "Surprise/ACaseofYou_000353800_00000027.webp",
)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()
