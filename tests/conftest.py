"""Shared fixtures: real SFEW / FER2013 files pulled by DVC, and synthetic bad files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RAW_SFEW = ROOT / "data" / "raw" / "sfew"
RAW_FER = ROOT / "data" / "raw" / "fer2013"

#: Frames where the face is large, frontal and well lit (dlib HOG finds it at upsample 0).
CLEAR_FRAMES = (
    "Happy/ACaseofYou_000608400_00000006.webp",
    "Surprise/ACaseofYou_000353800_00000027.webp",
)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup` (it pulls the raw data with DVC)")
    return path


@pytest.fixture(scope="session")
def sfew_root() -> Path:
    return _require(RAW_SFEW)


@pytest.fixture(scope="session")
def fer_root() -> Path:
    return _require(RAW_FER)


@pytest.fixture(scope="session")
def clear_frame(sfew_root: Path) -> Path:
    return _require(sfew_root / CLEAR_FRAMES[0])


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture()
def bad_files(tmp_path: Path, clear_frame: Path) -> dict[str, Path]:
    """Files a data folder may hold that are not usable images, each with its expected reason."""
    folder = tmp_path / "bad"
    folder.mkdir()
    good = clear_frame.read_bytes()
    files = {
        "empty": b"",
        "corrupt": good[: len(good) // 3],  # truncated WebP
        "not_an_image": b"this is a text file, not a picture\n" * 20,
    }
    out = {}
    for reason, data in files.items():
        path = folder / f"{reason}.webp"
        path.write_bytes(data)
        out[reason] = path
    return out
