"""Benchmark: batch scoring on Spark (`ferops score`, local[2]) against the single-process
`ferops analyse` on the same SFEW frames, side by side in one run; the rows must be equal.

    python benchmarks/batch_scoring.py --bundle models/bundle --weights models/model.pt
    # default --sizes 60 0: the 60 frames of benchmarks/README.md, then all 675

The bundle is registered as champion in a throw-away sqlite registry (the Spark job applies
``models:/ferops-resnet18@champion`` through ``mlflow.pyfunc.spark_udf``); both commands run as
subprocesses whose memory (RSS of every process of the command: JVM, Spark's Python workers)
is sampled. Writes benchmarks/results/batch_scoring.json (machine, versions, images/s of each,
the ratio, peak memory, rows equal).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ferops.config import setup_logging, write_json
from ferops.data import scan_frames

log = logging.getLogger("benchmark")
ROOT = Path(__file__).resolve().parents[1]
#: The `ferops analyse` measurement of benchmarks/README.md: every 11th SFEW frame, the first 60.
EVERY, FRAMES = 11, 60


def run_measured(cmd: list[str], env: dict[str, str], interval: float = 0.2) -> dict:
    """Run ``cmd``; wall time and peak RSS (MB) of the whole process tree, of its JVM, and the
    largest peak of one Python process other than the command itself (Spark's workers)."""
    import tempfile

    import psutil

    start = time.perf_counter()
    # output to a file, not a pipe: a pipe nobody reads until the end fills up and blocks Spark
    log_file = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (read back after the loop)
    proc = subprocess.Popen(
        cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    peak_total, peak_java, peak_worker, peak_main = 0, 0, 0, 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            rss = {p.pid: (p.name(), p.memory_info().rss) for p in tree}
        except psutil.Error:
            time.sleep(interval)
            continue
        peak_total = max(peak_total, sum(r for _, r in rss.values()))
        peak_main = max(peak_main, rss.get(proc.pid, ("", 0))[1])
        peak_java = max([peak_java] + [r for n, r in rss.values() if n == "java"])
        workers = [r for pid, (n, r) in rss.items() if pid != proc.pid and n.startswith("python")]
        peak_worker = max([peak_worker, *workers])
        time.sleep(interval)
    log_file.seek(0)
    output = log_file.read()
    log_file.close()
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{output[-4000:]}")
    mb = 1024 * 1024
    return {
        "wall_s": round(seconds, 2),
        "peak_rss_total_mb": round(peak_total / mb),
        "peak_rss_command_mb": round(peak_main / mb),
        "peak_rss_java_mb": round(peak_java / mb),
        "peak_rss_python_worker_mb": round(peak_worker / mb),
        "output": output,
    }


def summary_of(output: str) -> dict:
    """The JSON ``ferops score`` logs after ``summary: ``."""
    for line in output.splitlines():
        if "summary: " in line:
            return json.loads(line.split("summary: ", 1)[1])
    raise ValueError("no summary line in the command's output")


def compare(
    frames: list[Path],
    folder: Path,
    env: dict[str, str],
    bundle: Path,
    master: str,
    driver_memory: str,
) -> dict:
    """Both commands on ``frames`` (copied into ``folder``), one after the other; their rates,
    memory, and whether every face's row is equal."""
    images = folder / "frames"
    images.mkdir(parents=True)
    for frame in frames:
        shutil.copy(frame, images / f"{frame.parent.name}_{frame.name}")
    ferops = [sys.executable, "-m", "ferops.analyse"]
    single_cmd = [
        *ferops,
        "analyse",
        str(images),
        "--bundle",
        str(bundle),
        "--out",
        str(folder / "single.jsonl"),
        "--quiet",
    ]
    spark_cmd = [
        *ferops,
        "score",
        str(images),
        "--out",
        str(folder / "spark.parquet"),
        "--master",
        master,
        "--driver-memory",
        driver_memory,
    ]
    load_before = os.getloadavg()[0]
    log.info("%d frames, single process: %s", len(frames), " ".join(single_cmd))
    single = run_measured(single_cmd, env)
    log.info("%d frames, spark: %s", len(frames), " ".join(spark_cmd))
    spark = run_measured(spark_cmd, env)
    spark_summary = summary_of(spark.pop("output"))
    # analyse's closing line: "… faces in S s (R images/s); …"
    single_rate = float(single.pop("output").rsplit("images/s", 1)[0].rsplit("(", 1)[1])
    single_faces, spark_faces = _faces(folder / "single.jsonl", folder / "spark.parquet")
    n = len(frames)
    return {
        "frames": n,
        "load_average_1min": {
            "before": round(load_before, 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "single_process": {
            "command": " ".join(single_cmd[1:]).replace(str(folder), "$TMP"),
            "images_per_s_timed": single_rate,
            "images_per_s_wall": round(n / single["wall_s"], 2),
            **single,
        },
        "spark": {
            "command": " ".join(spark_cmd[1:]).replace(str(folder), "$TMP"),
            "images_per_s_timed": spark_summary["images_per_s"],
            "images_per_s_wall": round(n / spark["wall_s"], 2),
            "faces": spark_summary["faces"],
            **spark,
        },
        "ratio_spark_over_single_timed": round(spark_summary["images_per_s"] / single_rate, 3),
        "ratio_spark_over_single_wall": round(single["wall_s"] / spark["wall_s"], 3),
        "faces_compared": len(single_faces),
        "rows_equal": single_faces == spark_faces,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=ROOT / "models/bundle")
    parser.add_argument("--weights", type=Path, default=ROOT / "models/model.pt")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="1g")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[FRAMES, 0],
        help="frames per comparison (every 11th frame, the first N; 0: all)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/batch_scoring.json")
    args = parser.parse_args(argv)
    setup_logging()

    import mlflow

    from ferops.registry import register_bundle

    tmp = Path(tempfile.mkdtemp(prefix="ferops-batch-"))
    try:
        registry = f"sqlite:///{tmp / 'mlflow.db'}"
        mlflow.set_tracking_uri(registry)
        mlflow.set_experiment("batch-scoring")
        with mlflow.start_run() as run:
            run_id = run.info.run_id
        register_bundle(args.bundle, args.weights, run_id, {"split_definition": "bench"}, 0.0)
        env = dict(
            os.environ,
            MLFLOW_TRACKING_URI=registry,
            PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        )
        every = [f.path for f in scan_frames(ROOT / "data/raw/sfew")]
        runs = []
        for size in args.sizes:
            frames = every[EVERY - 1 :: EVERY][:size] if size else every
            runs.append(
                compare(
                    frames,
                    tmp / f"n{len(frames)}",
                    env,
                    args.bundle,
                    args.master,
                    args.driver_memory,
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "what": "ferops score (Spark, mlflow.pyfunc.spark_udf on the registered champion) vs "
        "ferops analyse (one process) on the same SFEW frames, side by side",
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python benchmarks/batch_scoring.py", *(argv or sys.argv[1:])]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": _versions(),
        "bundle": str(args.bundle.resolve().relative_to(ROOT)),
        "master": args.master,
        "driver_memory": args.driver_memory,
        "frames_selection": f"size N: every {EVERY}th frame of data/raw/sfew in scan order, the "
        "first N; size 0: every frame",
        "runs": runs,
        "rows_equal": all(r["rows_equal"] for r in runs),
        "notes": "timed = each command's own clock over reading + scoring + writing (Spark: "
        "from reading the files to the written Parquet, the workers' model load "
        "included; analyse: its closing summary, model loaded before); wall = the "
        "whole command, interpreter, JVM and model load included. Memory: peak RSS "
        "sampled every 0.2 s; local mode runs the executor inside the driver JVM "
        "(peak_rss_java_mb) and one Python worker per core, each loading the model "
        "(peak_rss_python_worker_mb: the largest). Other jobs shared the 2 cores "
        "(load_average_1min).",
    }
    write_json(args.out, result)
    for r in runs:
        log.info(
            "%d frames: spark/single %.3f (timed), %.3f (wall), rows equal: %s",
            r["frames"],
            r["ratio_spark_over_single_timed"],
            r["ratio_spark_over_single_wall"],
            r["rows_equal"],
        )
    return 0 if result["rows_equal"] else 1


def _faces(jsonl: Path, parquet: Path) -> tuple[dict, dict]:
    """(file name, face index) → (expression, box, score, the 7 probabilities) of every face:
    from `ferops analyse`'s JSON lines and from `ferops score`'s Parquet."""
    import pyarrow.parquet as pq

    from ferops.data import CLASSES

    single = {}
    for line in jsonl.read_text().splitlines():
        row = json.loads(line)
        single[(Path(row["file"]).name, row["face"])] = (
            row["expression"],
            [float(v) for v in row["box"]],
            row["score"],
            [row[c] for c in CLASSES],
        )
    spark = {}
    for r in pq.read_table(parquet).to_pylist():
        for i, face in enumerate(r["faces"]):
            spark[(Path(r["path"]).name, i)] = (
                face["expression"],
                face["box"],
                face["score"],
                [face["probabilities"][c] for c in CLASSES],
            )
    return single, spark


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("pyspark", "mlflow", "onnxruntime-gpu", "pandas", "pyarrow")
    return {n: version(n) for n in names} | {"java": _java()}


def _java() -> str:
    done = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    return done.stderr.splitlines()[0] if done.stderr else "unknown"


if __name__ == "__main__":
    sys.exit(main())
