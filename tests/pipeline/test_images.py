"""Decoding: every kind of bad input raises ImageDecodeError with a reason; odd modes convert."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferops.images import ImageDecodeError, decode_image, read_image, to_gray


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_real_sfew_webp_decodes_to_rgb(clear_frame: Path) -> None:
    rgb = read_image(clear_frame)
    assert rgb.shape == (576, 720, 3) and rgb.dtype == np.uint8


@pytest.mark.parametrize("reason", ["empty", "corrupt", "not_an_image"])
def test_bad_files_raise_with_reason(bad_files: dict[str, Path], reason: str) -> None:
    with pytest.raises(ImageDecodeError) as info:
        read_image(bad_files[reason])
    assert info.value.reason == reason


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError) as info:
        read_image(tmp_path / "nope.png")
    assert info.value.reason == "unreadable"


def test_pixel_limit_rejects_before_decoding() -> None:
    data = _encode(Image.new("L", (3000, 3000)), "PNG")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, max_pixels=1_000_000)
    assert info.value.reason == "too_many_pixels"


@pytest.mark.parametrize(
    "img, fmt",
    [
        (Image.new("RGBA", (20, 10), (255, 0, 0, 0)), "PNG"),  # transparent: becomes white
        (Image.new("P", (20, 10)), "PNG"),
        (Image.new("CMYK", (20, 10), (0, 0, 0, 0)), "JPEG"),
        (Image.new("LA", (20, 10)), "PNG"),
        (Image.fromarray(np.full((10, 20), 65535, dtype=np.uint16)), "PNG"),
    ],
)
def test_modes_convert_to_rgb(img: Image.Image, fmt: str) -> None:
    rgb = decode_image(_encode(img, fmt))
    assert rgb.shape == (10, 20, 3) and rgb.dtype == np.uint8


def test_transparent_and_16bit_white_stay_white() -> None:
    rgba = decode_image(_encode(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG"))
    assert (rgba == 255).all()
    white16 = decode_image(
        _encode(Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)), "PNG")
    )
    assert (white16 == 255).all()


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    rgb = decode_image(_encode(img, "JPEG", exif=exif.tobytes()))
    assert rgb.shape == (40, 20, 3)


def test_to_gray_matches_pillow() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    ours = to_gray(rgb).astype(int)
    pillow = np.asarray(Image.fromarray(rgb).convert("L")).astype(int)
    assert np.abs(ours - pillow).max() <= 1


def test_aspect_limit_rejects_on_the_header() -> None:
    data = _encode(Image.new("L", (4000, 8)), "PNG")
    assert decode_image(data).shape == (8, 4000, 3)  # no limit asked: decoded
    for limit in (4.0, 8.0):
        with pytest.raises(ImageDecodeError) as info:
            decode_image(data, max_aspect=limit)
        assert info.value.reason == "bad_aspect"
    assert decode_image(_encode(Image.new("L", (32, 8)), "PNG"), max_aspect=4.0).shape == (
        8,
        32,
        3,
    )


def test_16bit_levels_scale_exactly() -> None:
    levels = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # 0, 257, …, 65535
    gray = decode_image(_encode(Image.fromarray(levels), "PNG"))[..., 0]
    np.testing.assert_array_equal(gray, np.arange(256, dtype=np.uint8).reshape(16, 16))
