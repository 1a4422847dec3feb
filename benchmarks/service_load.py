"""Load benchmark of the BentoML service: N concurrent closed-loop clients for T seconds.

Starts two real ``bentoml serve`` processes on 127.0.0.1 over the same bundle — adaptive batching
on (``FEROPS_BATCHING=1``) and off (``0``) — and drives them in interleaved rounds, so drifts of
this shared machine hit both alike. Workloads: ``/predict`` on face crops (``crop=true``, FER2013
public-test faces: classification-bound, where batching matters) and ``/predict`` on full SFEW
frames (detection included). Reports requests/s, p50/p99 latency, errors, the on/off ratio, and
the servers' memory (RSS of every process of each server) before, between and after the rounds.
Last, two overload runs: ``--overload-clients`` (64) clients on full frames, more than the frame
lane holds (``FEROPS_MAX_QUEUE``, 32): answers by status, how many 503s carried ``Retry-After``,
memory before and after. In the first the clients honour ``Retry-After`` (capped at 2 s), as a
well-behaved client would; in the second they ignore it and post again at once (a naive or
hostile client): its answered frames per second are compared with the 16-client frame rate of
the same run (``goodput_over_16_clients``).

Clients send pre-encoded multipart bodies (the same bytes ``requests`` would build), so the
load generator, which shares this machine's CPUs with the server, spends little CPU per post.

    python benchmarks/service_load.py --bundle models/bundle --seconds 20

Writes benchmarks/results/service_load.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import requests

from ferops.config import setup_logging
from ferops.packaging import store_bundle
from ferops.processes import free_port, stop_process_group, wait_http

log = logging.getLogger("benchmark")
ROOT = Path(__file__).resolve().parents[1]


class Server:
    """A ``bentoml serve service:FerService`` process group on 127.0.0.1."""

    def __init__(self, home: Path, batching: bool, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(
            os.environ,
            BENTOML_HOME=str(home),
            BENTOML_DO_NOT_TRACK="true",
            FEROPS_BATCHING="1" if batching else "0",
        )
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "bentoml"),
                "serve",
                "service:FerService",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait(self, timeout: float = 180) -> None:
        wait_http(f"{self.url}/readyz", timeout, self.proc)

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of the server's processes (MB), by command line role."""
        root = psutil.Process(self.proc.pid)
        out: dict[str, float] = {}
        for proc in [root, *root.children(recursive=True)]:
            try:
                cmd = " ".join(proc.cmdline())
                rss = proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
            role = (
                "classifier"
                if "ferops-classifier" in cmd or "service_name=ferops-classifier" in cmd
                else "api"
                if "_bentoml_impl.worker" in cmd or "worker" in cmd
                else "supervisor"
            )
            out[role] = round(out.get(role, 0.0) + rss, 1)
        out["total"] = round(sum(v for k, v in out.items() if k != "total"), 1)
        return out

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.log.close()


def multipart(data: bytes, form: dict[str, str]) -> tuple[bytes, str]:
    """The multipart body and content type of an upload with these text fields."""
    from urllib3 import encode_multipart_formdata

    return encode_multipart_formdata({"image": ("x", data), **form})


def load(
    url: str,
    payloads: list[bytes],
    form: dict[str, str],
    clients: int,
    seconds: float,
    honour_retry_after: bool = False,
) -> dict:
    """``clients`` threads posting to ``/predict`` back to back for ``seconds``; with
    ``honour_retry_after`` a client told 503 waits ``Retry-After`` seconds (at most 2)."""
    bodies = [multipart(data, form) for data in payloads]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    retry_after: list[int] = []  # Retry-After of each 503 (-1: missing)
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(index: int) -> None:
        with requests.Session() as session:
            i = index
            while time.perf_counter() < deadline:
                body, content_type = bodies[i % len(bodies)]
                i += clients
                start = time.perf_counter()
                try:
                    answer = session.post(
                        f"{url}/predict",
                        data=body,
                        timeout=120,
                        headers={"Content-Type": content_type},
                    )
                    ok = answer.status_code == 200
                    key = str(answer.status_code)
                    wait = int(answer.headers.get("Retry-After", -1)) if key == "503" else None
                except requests.RequestException as exc:
                    ok, key, wait = False, type(exc).__name__, None
                elapsed = time.perf_counter() - start
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors[key] = errors.get(key, 0) + 1
                    if wait is not None:
                        retry_after.append(wait)
                if wait is not None and honour_retry_after:
                    time.sleep(min(max(wait, 0), 2))

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "req_s": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "status_5xx_other_than_503": sum(
            n for k, n in errors.items() if k.isdigit() and int(k) >= 500 and k != "503"
        ),
        "with_retry_after_503": sum(w >= 1 for w in retry_after),
        "retry_after_s_max": max(retry_after, default=None),
    }


def merge(rounds: list[dict]) -> dict:
    """Rounds of one cell → totals (req/s over all rounds; latency percentiles averaged)."""
    total = sum(r["requests"] for r in rounds)
    wall = sum(r["seconds"] for r in rounds)
    return {
        "clients": rounds[0]["clients"],
        "requests": total,
        "errors": sum(r["errors"] for r in rounds),
        "req_s": round(total / wall, 2),
        "p50_ms": round(float(np.mean([r["p50_ms"] for r in rounds])), 1),
        "p99_ms": round(float(np.mean([r["p99_ms"] for r in rounds])), 1),
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "bundle")
    parser.add_argument("--crops", type=Path, default=ROOT / "data/raw/fer2013/publictest")
    parser.add_argument("--frames", type=Path, default=ROOT / "data/raw/sfew")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--overload-clients", type=int, default=64, help="0: no overload run")
    parser.add_argument("--logs", type=Path, default=None, help="keep the servers' logs here")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/service_load.json")
    args = parser.parse_args(argv)
    setup_logging()

    rng = np.random.default_rng(0)
    crops = sorted(args.crops.rglob("*.png")) + sorted(args.crops.rglob("*.jpg"))
    frames = sorted(args.frames.rglob("*.webp")) + sorted(args.frames.rglob("*.jpg"))
    if not crops or not frames:
        parser.error(f"no crops under {args.crops} or no frames under {args.frames}")
    crop_data = [p.read_bytes() for p in rng.choice(crops, 200, replace=False)]
    frame_data = [p.read_bytes() for p in rng.choice(frames, 40, replace=False)]

    with tempfile.TemporaryDirectory(prefix="ferops-load-") as tmp:
        home = Path(tmp)
        os.environ["BENTOML_HOME"] = str(home)
        tag = store_bundle(args.bundle, {"source_path": str(args.bundle)})
        logs = args.logs or home
        logs.mkdir(parents=True, exist_ok=True)
        servers = {
            "on": Server(home, True, logs / "on.log"),
            "off": Server(home, False, logs / "off.log"),
        }
        try:
            for server in servers.values():
                server.wait()
            info = requests.post(f"{servers['on'].url}/info", json={}, timeout=30).json()
            memory = {mode: {"cold": s.rss_mb()} for mode, s in servers.items()}
            for server in servers.values():  # warm-up: sessions, dispatcher optimiser, detectors
                load(server.url, crop_data, {"crop": "true"}, 4, 3)
                load(server.url, frame_data, {}, 2, 5)
            for mode, server in servers.items():
                memory[mode]["warm"] = server.rss_mb()
            cells: dict[str, dict[int, list[dict]]] = {"on": {}, "off": {}}
            frame_cells: dict[int, list[dict]] = {}
            for r in range(args.rounds):
                for clients in args.clients:
                    for mode, server in servers.items():
                        result = load(
                            server.url, crop_data, {"crop": "true"}, clients, args.seconds
                        )
                        log.info(
                            "round %d crops %s %2d clients: %s",
                            r,
                            mode,
                            clients,
                            {k: result[k] for k in ("req_s", "p50_ms", "p99_ms", "errors")},
                        )
                        cells[mode].setdefault(clients, []).append(result)
                    result = load(servers["on"].url, frame_data, {}, clients, args.seconds)
                    log.info(
                        "round %d frames on %2d clients: %s",
                        r,
                        clients,
                        {k: result[k] for k in ("req_s", "p50_ms", "p99_ms", "errors")},
                    )
                    frame_cells.setdefault(clients, []).append(result)
                for mode, server in servers.items():
                    memory[mode][f"after_round_{r + 1}"] = server.rss_mb()
            overload = hostile = None
            if args.overload_clients:
                on = servers["on"]
                before = on.rss_mb()
                result = load(on.url, frame_data, {}, args.overload_clients, args.seconds, True)
                log.info(
                    "overload frames %d clients: %s",
                    args.overload_clients,
                    {
                        k: result[k]
                        for k in ("req_s", "p99_ms", "error_kinds", "with_retry_after_503")
                    },
                )
                overload = {
                    **result,
                    "memory_mb_before": before,
                    "memory_mb_after": on.rss_mb(),
                    "max_queue_per_lane": info["max_queue_per_lane"],
                }
                before = on.rss_mb()
                result = load(on.url, frame_data, {}, args.overload_clients, args.seconds, False)
                log.info(
                    "overload frames %d clients ignoring Retry-After: %s",
                    args.overload_clients,
                    {k: result[k] for k in ("req_s", "p99_ms", "error_kinds")},
                )
                polite = merge(frame_cells[16])["req_s"] if 16 in frame_cells else None
                hostile = {
                    **result,
                    "memory_mb_before": before,
                    "memory_mb_after": on.rss_mb(),
                    "frames_16_clients_req_s": polite,
                    "goodput_over_16_clients": round(result["req_s"] / polite, 3)
                    if polite
                    else None,
                }
        finally:
            for server in servers.values():
                server.stop()

    crops_out = {
        mode: {str(c): merge(rounds) for c, rounds in by.items()} for mode, by in cells.items()
    }
    ratio = {
        str(c): round(crops_out["on"][str(c)]["req_s"] / crops_out["off"][str(c)]["req_s"], 2)
        for c in args.clients
    }
    result = {
        "what": "closed-loop clients POST /predict for T seconds; batching on vs off interleaved",
        "command": "python benchmarks/service_load.py " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {m: __import__(m).__version__ for m in ("bentoml", "onnxruntime", "numpy")},
        "model": tag,
        "providers": info["providers"],
        "max_batch_size": info["max_batch_size"],
        "max_latency_ms": info["max_latency_ms"],
        "seconds_per_cell": args.seconds,
        "rounds": args.rounds,
        "crops": crops_out,
        "batching_on_over_off_req_s": ratio,
        "frames_batching_on": {str(c): merge(rounds) for c, rounds in frame_cells.items()},
        "detection_cascade": info["detection_cascade"],
        "memory_mb": memory,
        "memory_growth_after_warmup_mb": {
            mode: round(m[f"after_round_{args.rounds}"]["total"] - m["warm"]["total"], 1)
            for mode, m in memory.items()
        },
        "memory_growth_round_1_to_last_mb": {
            mode: round(m[f"after_round_{args.rounds}"]["total"] - m["after_round_1"]["total"], 1)
            for mode, m in memory.items()
        },
        "overload_frames_batching_on": overload,
        "overload_frames_ignore_retry_after": hostile,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("batching on/off req/s ratio: %s; wrote %s", ratio, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
