"""Offline augmentation yields the configured count and shapes; the random crop is square."""

from __future__ import annotations

import numpy as np
import pytest

from ferops.augment import AugmentConfig, augment_image, random_square_crop


def test_configured_count_and_shapes() -> None:
    image = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100).astype(np.uint8)
    config = AugmentConfig(
        ops=("original", "flip", "stretch", "widen", "flip_stretch"), factor=1.2
    )
    out = augment_image(image, config)
    assert list(out) == list(config.ops)
    assert out["original"].shape == (100, 100)
    assert out["flip"].shape == (100, 100)
    assert out["stretch"].shape == (120, 100)
    assert out["widen"].shape == (100, 120)
    assert out["flip_stretch"].shape == (120, 100)
    assert np.array_equal(out["flip"], image[:, ::-1])
    assert np.array_equal(out["original"], image)


def test_too_many_or_unknown_ops_are_rejected() -> None:
    with pytest.raises(ValueError, match="valid"):
        AugmentConfig(ops=("original", "rotate"))
    with pytest.raises(ValueError, match="1..5"):
        AugmentConfig(ops=("original", "flip", "stretch", "widen", "flip_stretch", "flip_widen"))


def test_random_square_crop_is_square_and_seeded() -> None:
    image = np.random.default_rng(0).integers(0, 255, (256, 294), dtype=np.uint8)
    a = random_square_crop(image, 224, np.random.default_rng(3))
    b = random_square_crop(image, 224, np.random.default_rng(3))
    assert a.shape == (224, 224) and np.array_equal(a, b)
    small = random_square_crop(image[:100, :120], 224, np.random.default_rng(0))
    assert small.shape == (224, 224)
