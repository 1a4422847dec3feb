"""Decoding untrusted image bytes into plain RGB arrays.

Shared by the data stages and the service: a file or an upload either becomes an ``H×W×3 uint8``
array, or raises :class:`ImageDecodeError` whose ``reason`` says what was wrong. Nothing here
crashes on bad input and nothing decodes more pixels than the caller allows.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Default pixel budget: 40 MP is far above any movie frame and far below what exhausts memory.
DEFAULT_MAX_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """An input that is not a usable image; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_aspect: float | None = None
) -> np.ndarray:
    """Decode image bytes (any format Pillow reads) to an RGB ``uint8`` array.

    EXIF orientation is applied; palette, gray, 16-bit, CMYK and alpha images are converted to
    RGB (alpha is composited on white). Raises :class:`ImageDecodeError` for empty, truncated,
    non-image or oversized input; with ``max_aspect``, also for an image whose long side is more
    than ``max_aspect`` times its short side (``bad_aspect``). Size and shape are checked on the
    header, before a pixel is decoded.
    """
    if not data:
        raise ImageDecodeError("empty", "the file has zero bytes")
    try:
        with warnings.catch_warnings():
            # Pillow warns before it raises on bombs; we check the size ourselves, below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width <= 0 or height <= 0:
                    raise ImageDecodeError("bad_size", f"image has size {width}x{height}")
                if width * height > max_pixels:
                    raise ImageDecodeError(
                        "too_many_pixels",
                        f"{width}x{height} = {width * height} pixels exceeds {max_pixels}",
                    )
                if max_aspect is not None and max(width, height) > max_aspect * min(width, height):
                    raise ImageDecodeError(
                        "bad_aspect",
                        f"{width}x{height} is more than {max_aspect:g} times longer than wide",
                    )
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not_an_image", "no known image format in the data") from exc
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("too_many_pixels", str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError("corrupt", f"{type(exc).__name__}: {exc}") from exc


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read and decode an image file; see :func:`decode_image`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError("unreadable", f"{type(exc).__name__}: {exc}") from exc
    return decode_image(data, max_pixels=max_pixels)


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to RGB uint8, scaling high bit depths instead of clipping."""
    if img.mode.startswith("I;16"):  # integer scaling: 4 bytes a pixel, no float copies
        gray = (np.asarray(img).astype(np.uint32) * 255 // 65535).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "I":
        arr = np.asarray(img, dtype=np.float32)
        top = max(float(arr.max()), 1.0)
        gray = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        gray = ((arr - lo) / (hi - lo or 1.0) * 255.0).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB uint8 array, as uint8 (the same weights as Pillow and OpenCV)."""
    if rgb.ndim == 2:
        return rgb
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(rgb[..., :3].astype(np.float32) @ weights + 0.5, 0, 255).astype(np.uint8)
