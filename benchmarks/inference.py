"""Benchmark: torch eager vs ONNX Runtime on the exported network (batch 1 and 32, in one run,
interleaved), the bundle's int8 network vs its fp32 one (same way, with the test-split accuracy of
both), and end-to-end detect + classify per 720×576 SFEW frame through ferops.inference.

    python benchmarks/inference.py --bundle models/bundle --model models/model.pt --n-frames 60
    python benchmarks/inference.py --only int8   # rerun the int8 section alone, keep the rest

Writes benchmarks/results/inference.json (machine, versions, throughput, ratios, latencies).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ferops.config import setup_logging
from ferops.data import load_faces, scan_frames
from ferops.export import export_onnx
from ferops.images import read_image
from ferops.inference import MODEL_FILES, Predictor, make_session
from ferops.model import FerResNet, load_checkpoint

log = logging.getLogger("benchmark")


def throughput(run, batch: int, seconds: float) -> float:
    """Images per second of ``run()`` (one batch per call) over about ``seconds``."""
    run()  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        count += 1
    return count * batch / (time.perf_counter() - start)


def gflop_per_image(model: FerResNet, size: int) -> float:
    """Forward FLOPs of one image (a multiply-add counts 2), by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model.forward_features(torch.zeros(1, 1, size, size))
    return counter.get_total_flops() / 1e9


def sgemm_gflop_s(seconds: float, n: int = 2048) -> float:
    """This machine's practical float32 peak: a large matrix product (torch, same threads)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    calls = throughput(lambda: torch.mm(a, b), 1, seconds)
    return calls * 2 * n**3 / 1e9


def compare(
    model: FerResNet,
    onnx_path: Path,
    size: int,
    batches: tuple[int, ...],
    seconds: float,
    rounds: int,
) -> dict:
    session = make_session(onnx_path, "auto")
    out = {}
    for batch in batches:
        x = np.random.default_rng(0).standard_normal((batch, 1, size, size)).astype(np.float32)
        xt = torch.from_numpy(x)

        def run_torch(xt: torch.Tensor = xt) -> None:
            with torch.inference_mode():
                model.forward_features(xt)

        def run_ort(x: np.ndarray = x) -> None:
            session.run(["logits", "features"], {"input": x})

        torch_ips, ort_ips = [], []
        for _ in range(rounds):  # interleaved, so drifts of the shared machine hit both
            torch_ips.append(throughput(run_torch, batch, seconds))
            ort_ips.append(throughput(run_ort, batch, seconds))
        t, o = float(np.median(torch_ips)), float(np.median(ort_ips))
        gflop = gflop_per_image(model, size)
        out[f"batch_{batch}"] = {
            "torch_img_s": round(t, 1),
            "ort_img_s": round(o, 1),
            "ort_over_torch": round(o / t, 2),
            "torch_gflop_s": round(t * gflop, 1),
            "ort_gflop_s": round(o * gflop, 1),
        }
        log.info(
            "%d px batch %d: torch %.1f img/s, ORT %.1f img/s, ratio %.2f",
            size,
            batch,
            t,
            o,
            o / t,
        )
    out["providers"] = session.get_providers()
    return out


def compare_precisions(
    bundle: Path, split: Path, crops: Path, batches: tuple[int, ...], seconds: float, rounds: int
) -> dict:
    """The bundle's int8 network against its fp32 one on the CPU provider (the int8 kernels are
    CPU ones): throughput interleaved round by round, and the test-split accuracy of both."""
    sessions = {p: make_session(bundle / MODEL_FILES[p], "cpu") for p in ("fp32", "int8")}
    size = sessions["fp32"].get_inputs()[0].shape[-1]
    out: dict = {}
    for batch in batches:
        x = np.random.default_rng(0).uniform(-1, 1, (batch, 1, size, size)).astype(np.float32)
        ips: dict[str, list[float]] = {"fp32": [], "int8": []}
        for _ in range(rounds):  # interleaved, so drifts of the shared machine hit both
            for precision, session in sessions.items():

                def run(session: ort.InferenceSession = session, x: np.ndarray = x) -> None:
                    session.run(["logits", "features"], {"input": x})

                ips[precision].append(throughput(run, batch, seconds))
        f, i = float(np.median(ips["fp32"])), float(np.median(ips["int8"]))
        out[f"batch_{batch}"] = {
            "fp32_img_s": round(f, 1),
            "int8_img_s": round(i, 1),
            "int8_over_fp32": round(i / f, 2),
            "fp32_ms_per_batch": round(1000 * batch / f, 2),
            "int8_ms_per_batch": round(1000 * batch / i, 2),
        }
        log.info("int8 batch %d: fp32 %.1f img/s, int8 %.1f img/s, ratio %.2f", batch, f, i, i / f)
    images, labels, _ = load_faces(split, crops, ["test"])
    truth = np.asarray(labels)
    predicted = {
        p: Predictor(bundle, providers="cpu", precision=p).classify(images)[0].argmax(1)
        for p in sessions
    }
    out.update(
        {f"test_accuracy_{p}": round(float((predicted[p] == truth).mean()), 4) for p in predicted},
        test_agreement=round(float((predicted["fp32"] == predicted["int8"]).mean()), 4),
        test_faces=len(truth),
        served=Predictor(bundle, load_model=False).precision,
        bytes={p: (bundle / MODEL_FILES[p]).stat().st_size for p in sessions},
        providers=sessions["int8"].get_providers(),
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=Path("models/bundle"))
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--frames", type=Path, default=Path("data/raw/sfew"))
    parser.add_argument("--split", type=Path, default=Path("data/split/split.csv"))
    parser.add_argument("--crops", type=Path, default=Path("data/prepared/faces"))
    parser.add_argument("--n-frames", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/inference.json"))
    parser.add_argument("--only", choices=["int8"], help="rerun this section alone, in --out")
    args = parser.parse_args(argv)
    setup_logging()
    torch.set_grad_enabled(False)

    if args.only == "int8":  # its ratio is measured side by side, so it stands on its own
        results = json.loads(args.out.read_text())
        section = compare_precisions(
            args.bundle, args.split, args.crops, (1, 32), args.seconds, args.rounds
        )
        section["sgemm_gflop_s"] = round(sgemm_gflop_s(args.seconds), 1)  # the machine's load
        section["date"] = time.strftime("%Y-%m-%d")
        results["int8"] = section
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        return 0

    model, meta = load_checkpoint(args.model)
    results = {"shipped_input": meta["input_size"]}
    # Roofline: how close each runtime already is to what this CPU can do at all.
    results["sgemm_gflop_s"] = round(sgemm_gflop_s(args.seconds), 1)
    results["gflop_per_image"] = {
        str(s): round(gflop_per_image(model, s), 4) for s in (meta["input_size"], 224)
    }
    log.info(
        "sgemm %.1f GFLOP/s; %s GFLOP per image",
        results["sgemm_gflop_s"],
        results["gflop_per_image"],
    )
    results["shipped"] = compare(
        model, args.bundle / "model.onnx", meta["input_size"], (1, 32), args.seconds, args.rounds
    )
    with tempfile.TemporaryDirectory() as tmp:  # the paper's 224 px input, same network
        path = Path(tmp) / "m224.onnx"
        export_onnx(model, 224, path)
        results["paper_224"] = compare(model, path, 224, (1, 32), args.seconds, args.rounds)
    results["int8"] = compare_precisions(
        args.bundle, args.split, args.crops, (1, 32), args.seconds, args.rounds
    )

    predictor = Predictor(args.bundle)
    frames = scan_frames(args.frames)[:: max(1, 675 // args.n_frames)][: args.n_frames]
    latencies, found = [], 0
    for frame in frames:
        rgb = read_image(frame.path)
        start = time.perf_counter()
        faces = predictor.analyse(rgb)
        latencies.append(1000 * (time.perf_counter() - start))
        found += bool(faces)
    lat = np.array(latencies)
    results["end_to_end_frame_ms"] = {
        "frames": len(frames),
        "with_face": found,
        "p50": round(float(np.percentile(lat, 50)), 1),
        "p90": round(float(np.percentile(lat, 90)), 1),
        "p99": round(float(np.percentile(lat, 99)), 1),
        "max": round(float(lat.max()), 1),
        "cascade": [s.detector + f"/up{s.upsample}" for s in predictor.face_config.cascade],
        "precision": predictor.precision,
    }
    log.info(
        "end to end per frame: p50 %.1f ms, p90 %.1f ms",
        results["end_to_end_frame_ms"]["p50"],
        results["end_to_end_frame_ms"]["p90"],
    )
    results["machine"] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch_threads": torch.get_num_threads(),
    }
    results["versions"] = {
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
    }
    results["date"] = time.strftime("%Y-%m-%d")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
