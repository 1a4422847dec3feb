"""The paper's offline augmentation (flip, stretch, widen) and the loader's random square crop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ferops.sections import SectionConfig

#: Offline operations. ``stretch`` makes the face taller, ``widen`` wider (by ``factor``).
OPS = ("original", "flip", "stretch", "widen", "flip_stretch", "flip_widen")
MAX_PER_SOURCE = 5  # the paper: "one such image can generate at most five"


@dataclass(frozen=True)
class AugmentConfig(SectionConfig):
    """``augment`` section of params.yaml."""

    ops: tuple[str, ...] = ("original", "flip", "stretch", "widen", "flip_stretch")
    factor: float = 1.15

    def __post_init__(self) -> None:
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise ValueError(f"unknown augment ops {unknown}; valid: {list(OPS)}")
        if not self.ops or len(self.ops) > MAX_PER_SOURCE or len(set(self.ops)) != len(self.ops):
            raise ValueError(f"ops must be 1..{MAX_PER_SOURCE} distinct names, got {self.ops}")
        if not 1.0 < self.factor <= 2.0:
            raise ValueError(f"factor must lie in (1, 2], got {self.factor}")


def _scale(image: np.ndarray, fy: float, fx: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (round(width * fx), round(height * fy))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def operation(name: str, factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """The image function of one named op."""
    flip = name.startswith("flip")
    base = name.removeprefix("flip_") if name != "flip" else "original"

    def apply(image: np.ndarray) -> np.ndarray:
        out = image[:, ::-1] if flip else image
        if base == "stretch":
            out = _scale(out, factor, 1.0)
        elif base == "widen":
            out = _scale(out, 1.0, factor)
        return np.ascontiguousarray(out)

    if name not in OPS:
        raise ValueError(f"unknown augment op {name!r}; valid: {list(OPS)}")
    return apply


def augment_image(image: np.ndarray, config: AugmentConfig) -> dict[str, np.ndarray]:
    """All configured versions of one face crop, keyed by op name."""
    return {op: operation(op, config.factor)(image) for op in config.ops}


def random_square_crop(image: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``side×side`` window (the paper's 224 crop); smaller images are upscaled first
    so their short side equals ``side``."""
    height, width = image.shape[:2]
    if min(height, width) < side:
        scale = side / min(height, width)
        image = cv2.resize(
            image, (max(side, round(width * scale)), max(side, round(height * scale)))
        )
        height, width = image.shape[:2]
    y0 = int(rng.integers(0, height - side + 1))
    x0 = int(rng.integers(0, width - side + 1))
    return image[y0 : y0 + side, x0 : x0 + side]
