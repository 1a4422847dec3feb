"""Benchmark: the added cost of the occlusion map per face, beside plain /explain's own cost.

    python benchmarks/occlusion.py --bundle models/bundle --n-frames 30 --rounds 3

On SFEW frames through ferops.inference (ONNX Runtime, CPU provider, as the service runs): per
frame, interleaved in every round so drifts of the shared machine hit all of them, (1) plain
/explain's work — detect, align, classify, explain (``Predictor.analyse(explain=True)``) — and
(2) for each grid size, the occlusion maps of the frame's faces from their preprocessed batch and
logits (the masked copies in one batch, and in chunks of 32 as BentoML's batcher splits them)
plus the JSON form with its PNG. Writes benchmarks/results/occlusion.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ferops.config import setup_logging
from ferops.data import scan_frames
from ferops.images import read_image
from ferops.inference import Predictor
from ferops.occlusion import GRID, occlusion_maps

log = logging.getLogger("benchmark")

#: BentoML's batcher splits a request over the classifier's max_batch_size (service.py) into
#: chunks of this size when requests are batched together.
BENTO_CHUNK = 32


def summary(ms: list[float]) -> dict[str, float]:
    values = np.asarray(ms)
    return {
        "n": len(values),
        "p50": round(float(np.percentile(values, 50)), 1),
        "p90": round(float(np.percentile(values, 90)), 1),
        "mean": round(float(values.mean()), 1),
        "min": round(float(values.min()), 1),
    }


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return 1000 * (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=Path("models/bundle"))
    parser.add_argument("--frames", type=Path, default=Path("data/raw/sfew"))
    parser.add_argument("--n-frames", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grids", type=int, nargs="+", default=[4, 5, 6, 7])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/occlusion.json"))
    args = parser.parse_args(argv)
    setup_logging()

    predictor = Predictor(args.bundle, "cpu")
    frames = scan_frames(args.frames)
    frames = frames[:: max(1, len(frames) // args.n_frames)][: args.n_frames]
    loaded = []  # (rgb, preprocessed faces, their logits)
    for frame in frames:
        rgb = read_image(frame.path)
        _, crops = predictor.locate(rgb)
        if crops:
            batch = predictor.preprocess(crops)
            loaded.append((rgb, batch, predictor.run(batch)[0]))
    faces = sum(len(batch) for _, batch, _ in loaded)
    log.info("%d of %d frames with a face, %d faces", len(loaded), len(frames), faces)

    def forward(batch: np.ndarray) -> np.ndarray:
        return predictor.run(batch)[0]

    def occlusion(batch: np.ndarray, logits: np.ndarray, grid: int, chunk: int = 0) -> None:
        for item in occlusion_maps(forward, batch, logits, grid=grid, chunk=chunk):
            json.dumps(item.to_dict())  # the answer's form: rounded cells and the PNG

    load_before = os.getloadavg()
    plain: list[float] = []  # per face: the frame's /explain work over its faces
    added: dict[str, list[float]] = {str(g): [] for g in args.grids}
    added_chunked: list[float] = []
    for rnd in range(args.rounds + 1):  # round 0 warms up and is dropped
        for rgb, batch, logits in loaded:
            k = len(batch)
            t_plain = timed(lambda rgb=rgb: predictor.analyse(rgb, explain=True)) / k
            t_grid = {
                g: timed(lambda b=batch, z=logits, g=g: occlusion(b, z, g)) / k for g in args.grids
            }
            t_chunk = timed(lambda b=batch, z=logits: occlusion(b, z, GRID, BENTO_CHUNK)) / k
            if rnd:
                plain += [t_plain] * k
                for g in args.grids:
                    added[str(g)] += [t_grid[g]] * k
                added_chunked += [t_chunk] * k
        log.info("round %d done", rnd)
    load_after = os.getloadavg()

    base = summary(plain)
    results = {
        "input_size": predictor.preprocess.input_size,
        "grid_shipped": GRID,
        "frames": len(frames),
        "frames_with_face": len(loaded),
        "faces": faces,
        "rounds": args.rounds,
        "plain_explain_ms_per_face": base,
        "occlusion_added_ms_per_face": {
            g: {
                **summary(ms),
                "masked_images": int(g) ** 2,
                "over_plain_explain_p50": round(summary(ms)["p50"] / base["p50"], 2),
            }
            for g, ms in added.items()
        },
        "occlusion_added_ms_per_face_chunks_of_32": {"grid": GRID, **summary(added_chunked)},
        "goal_ms_per_face": 50,
        "load_average_1min": {
            "before": round(load_before[0], 2),
            "after": round(load_after[0], 2),
        },
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "providers": predictor.providers,
        "versions": {"onnxruntime": ort.__version__, "python": platform.python_version()},
        "command": "python "
        + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d"),
    }
    for g, row in results["occlusion_added_ms_per_face"].items():
        log.info(
            "grid %s (%d masked): +%.1f ms p50 per face (%.2f× plain /explain %.1f ms)",
            g,
            row["masked_images"],
            row["p50"],
            row["over_plain_explain_p50"],
            base["p50"],
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
