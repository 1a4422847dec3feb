"""Where the network looked: occlusion sensitivity of one face, with the ONNX model only.

The network's input (one preprocessed face, 1×S×S) is cut into a :data:`GRID` × :data:`GRID`
grid of cells. Each cell in turn is painted over with :data:`FILL` (the normalisation mean:
mid-gray), all the masked copies go through the network in one batch, and a cell's sensitivity
is how much the probability of the class the network predicted on the unmasked face drops when
that cell is hidden (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
ECCV 2014). The map is that drop per cell, clipped at 0 and scaled so its largest cell is 1;
``max_drop`` keeps the unscaled size (a flat map of tiny drops is not a finding).

numpy only: no torch. Any callable that takes an N×1×S×S float32
batch and returns N×K logits works as the network (:func:`occlusion_maps`); the service runs
the two halves itself (:func:`masked_batch`, then :func:`sensitivity` on the classifier's answer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferops.explanation import softmax

#: Cells per side of the map: GRID² masked copies per face go through the network (cells of
#: 9–10 px at the shipped 48 px input). 5, not 6 or 7: the added cost per face must stay within
#: issue 15's 50 ms on the 2-core CPU (``benchmarks/occlusion.py`` →
#: ``benchmarks/results/occlusion.json`` measures 4–7 side by side with plain /explain).
GRID = 5
#: Value of a hidden cell in the preprocessed input: ``(x − mean) / std`` at x = mean (mid-gray).
FILL = 0.0

#: A network for this module: N×1×S×S float32 → N×K logits.
Forward = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class OcclusionMap:
    """The sensitivity of one face's prediction to hiding each cell of its input.

    ``cells[i, j]`` (row i from the top, column j from the left of the network's input) is in
    [0, 1]: the drop of the predicted class's probability when that cell is hidden, over the
    largest drop; ``max_drop`` is that largest drop (probability points, ≥ 0)."""

    cells: np.ndarray
    max_drop: float
    predicted: int

    @property
    def grid(self) -> int:
        return int(self.cells.shape[0])

    def to_dict(self, digits: int = 3) -> dict[str, Any]:
        """JSON form: ``grid``, ``cells`` (rows of numbers), ``max_drop``, ``fill``."""
        return {
            "grid": self.grid,
            "cells": np.round(self.cells, digits).tolist(),
            "max_drop": round(self.max_drop, 6),
            "fill": "mid-gray (the normalisation mean)",
        }


def cell_edges(size: int, grid: int = GRID) -> np.ndarray:
    """The ``grid + 1`` pixel edges of the cells along one side of a ``size`` input (cells
    differ by at most one pixel when ``grid`` does not divide ``size``)."""
    if not 1 <= grid <= size:
        raise ValueError(f"grid must be between 1 and the input size {size}, got {grid}")
    return np.round(np.linspace(0, size, grid + 1)).astype(int)


def masked_batch(batch: np.ndarray, grid: int = GRID, fill: float = FILL) -> np.ndarray:
    """N×1×S×S preprocessed faces → (N·grid²)×1×S×S copies, one cell hidden in each.

    Face-major order: rows ``f·grid² … (f+1)·grid² − 1`` belong to face f, cell (i, j) at
    ``f·grid² + i·grid + j``."""
    batch = np.asarray(batch, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[1] != 1 or batch.shape[2] != batch.shape[3]:
        raise ValueError(f"expected an N×1×S×S batch, got shape {batch.shape}")
    edges = cell_edges(batch.shape[2], grid)
    out = np.repeat(batch, grid * grid, axis=0)
    for i in range(grid):
        for j in range(grid):
            out[
                i * grid + j :: grid * grid, :, edges[i] : edges[i + 1], edges[j] : edges[j + 1]
            ] = fill
    return out


def sensitivity(
    base_logits: np.ndarray, masked_logits: np.ndarray, grid: int = GRID
) -> OcclusionMap:
    """One face's map from its K logits and the grid²×K logits of its masked copies (in
    :func:`masked_batch` order), for the class the unmasked face is predicted as."""
    base = np.asarray(base_logits, dtype=np.float64).ravel()
    masked = np.asarray(masked_logits, dtype=np.float64).reshape(grid * grid, -1)
    if masked.shape[1] != base.size:
        raise ValueError(f"masked logits have {masked.shape[1]} classes, the face has {base.size}")
    predicted = int(np.argmax(base))
    drop = softmax(base)[predicted] - softmax(masked)[:, predicted]
    drop = np.clip(drop, 0.0, None).reshape(grid, grid)
    top = float(drop.max())
    cells = drop / top if top > 0 else np.zeros_like(drop)
    return OcclusionMap(cells=cells, max_drop=top, predicted=predicted)


def maps_from_logits(
    base_logits: np.ndarray, masked_logits: np.ndarray, grid: int = GRID
) -> list[OcclusionMap]:
    """The maps of N faces from their N×K logits and the (N·grid²)×K logits of
    :func:`masked_batch`'s copies."""
    base = np.asarray(base_logits)
    cells = grid * grid
    if len(masked_logits) != len(base) * cells:
        raise ValueError(
            f"{len(base)} faces need {len(base) * cells} masked logits, got {len(masked_logits)}"
        )
    return [
        sensitivity(base[f], masked_logits[f * cells : (f + 1) * cells], grid)
        for f in range(len(base))
    ]


def occlusion_maps(
    forward: Forward,
    batch: np.ndarray,
    base_logits: np.ndarray | None = None,
    grid: int = GRID,
    chunk: int = 0,
) -> list[OcclusionMap]:
    """Maps of every face of an N×1×S×S batch through ``forward`` (batch → logits): any
    ONNX-like callable, e.g. ``lambda b: session.run(["logits"], {"input": b})[0]``.

    ``base_logits`` (N×K) saves a pass when the caller already has them; ``chunk`` > 0 runs
    the masked copies at most that many at a time (0: all in one batch)."""
    batch = np.asarray(batch, dtype=np.float32)
    if not len(batch):
        return []
    if base_logits is None:
        base_logits = np.asarray(forward(batch))
    masked = masked_batch(batch, grid)
    step = chunk if chunk > 0 else len(masked)
    logits = np.concatenate(
        [np.asarray(forward(masked[k : k + step])) for k in range(0, len(masked), step)]
    )
    return maps_from_logits(base_logits, logits, grid)


def attach(
    faces: Sequence[dict[str, Any]],
    maps: Sequence[OcclusionMap],
    located: Sequence[dict[str, Any]],
) -> None:
    """Put each face's map into its explanation as ``occlusion`` (faces answered by
    :meth:`ferops.inference.Predictor.describe` with ``explain``), with the ``corners`` of its
    face record (:meth:`ferops.inference.Predictor.locate`: where the map's square lies in the
    uploaded image) when the record has them."""
    for face, occlusion, record in zip(faces, maps, located, strict=True):
        entry = occlusion.to_dict()
        if record.get("corners") is not None:
            entry["corners"] = record["corners"]
        face["explanation"]["occlusion"] = entry
