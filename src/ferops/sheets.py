"""Contact sheets: grids of labelled thumbnails people look at (OpenCV only, no GUI)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

GREEN, RED, WHITE, YELLOW = (60, 200, 60), (40, 40, 230), (255, 255, 255), (0, 220, 255)


def tile(
    image: np.ndarray, caption: str, size: int, color: tuple[int, int, int] = WHITE
) -> np.ndarray:
    """Resize ``image`` (gray or BGR) to fit ``size×size`` on black and write a caption under
    it."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    height, width = image.shape[:2]
    scale = size / max(height, width)
    resized = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))))
    cell = np.zeros((size + 34, size, 3), dtype=np.uint8)
    y0, x0 = (size - resized.shape[0]) // 2, (size - resized.shape[1]) // 2
    cell[y0 : y0 + resized.shape[0], x0 : x0 + resized.shape[1]] = resized
    for line, text in enumerate(caption.split("\n")[:2]):
        cv2.putText(
            cell,
            text[:30],
            (3, size + 13 + 15 * line),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.38,
            color,
            1,
            cv2.LINE_AA,
        )
    return cell


def grid(tiles: list[np.ndarray], columns: int, title: str = "") -> np.ndarray:
    """Arrange equally sized tiles in rows, with an optional title bar."""
    if not tiles:
        tiles = [np.zeros((64, 64, 3), dtype=np.uint8)]
    height, width = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (height + 4) + 30, columns * (width + 4), 3), 32, dtype=np.uint8)
    for index, cell in enumerate(tiles):
        r, c = divmod(index, columns)
        sheet[
            30 + r * (height + 4) : 30 + r * (height + 4) + height,
            c * (width + 4) : c * (width + 4) + width,
        ] = cell
    cv2.putText(sheet, title, (6, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, WHITE, 1, cv2.LINE_AA)
    return sheet


def frame_with_boxes(gray_or_rgb: np.ndarray, candidates: list[dict[str, Any]]) -> np.ndarray:
    """The frame (BGR) with every candidate box drawn: the principal face green, others red."""
    image = gray_or_rgb
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    image = image.copy()
    for cand in candidates:
        left, top, right, bottom = cand["box"]
        color = GREEN if cand.get("principal") else RED
        cv2.rectangle(image, (left, top), (right, bottom), color, 3)
    return image


def save(path: Path, sheet: np.ndarray) -> None:
    """Write a sheet as PNG, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"could not write {path}")


def candidates_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The candidate list a manifest row stores as JSON."""
    return json.loads(row.get("candidates") or "[]")


def prepare_contact_sheet(
    rows: list[dict[str, Any]],
    raw_root: Path,
    crop_root: Path,
    out: Path,
    seed: int = 0,
    per_kind: int = 8,
    cell: int = 150,
) -> None:
    """One picture of what ``prepare`` did: multi-face frames with every candidate box (principal
    green), frames where no face was found, then sample crops of each class."""
    from ferops.images import ImageDecodeError, read_image
    from ferops.prepare import rng_sample

    tiles: list[np.ndarray] = []
    multi = rng_sample([r for r in rows if int(r["faces_found"]) > 1], per_kind, seed)
    missed = rng_sample([r for r in rows if r["status"] in ("no_face", "centre")], per_kind, seed)
    for row, kind in [(r, "multi") for r in multi] + [(r, "none") for r in missed]:
        try:
            frame = read_image(raw_root / row["path"])
        except ImageDecodeError:
            continue
        boxed = frame_with_boxes(frame, candidates_of(row))
        caption = f"{row['label']} {kind}: {row['faces_found']} face(s)\n{row['image_id'][-28:]}"
        tiles.append(tile(boxed, caption, cell, YELLOW if kind == "multi" else RED))
    crops = [r for r in rows if r.get("crop")]
    for row in rng_sample(crops, 3 * per_kind, seed):
        image = cv2.imread(str(crop_root / row["crop"]), cv2.IMREAD_GRAYSCALE)
        if image is not None:
            caption = f"{row['label']} ({row['status']})\nfaces={row['faces_found']}"
            tiles.append(tile(image, caption, cell))
    title = "prepare: multi-face frames (green = principal) | no face found | sample crops"
    save(out, grid(tiles, columns=8, title=title))
