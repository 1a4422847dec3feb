"""``ferops analyse PATH…``: expressions of every face in images, folders and videos, no server.

The model is a serving bundle folder run through :class:`ferops.inference.Predictor` — the same
detection, framing contract and network as the service. Files are read one after the other;
face crops of consecutive images / video frames share one classifier batch.

* **Images** (any format Pillow reads) and **folders** (searched recursively for image and video
  suffixes) give one row per face.
* **Videos** (anything OpenCV's ``cv2.VideoCapture`` decodes) are sampled at ``fps`` frames a
  second of video time. The principal face is *followed* from frame to frame: the face with the
  largest IoU with the previous followed box (at least :data:`MIN_FOLLOW_IOU`), else — first
  frame, or the face was lost — the detector's principal face of that frame. The followed
  face's probabilities are smoothed by a centred moving average over ``smooth_s`` seconds of
  video time (every followed sample within ±``smooth_s``/2 of a sample is averaged with equal
  weight; gaps without a face shorten the window, they are never filled). Each video gets a
  timeline plot of the smoothed probabilities and optionally an annotated copy.
* **Bad files** (unreadable, corrupt, not an image, a video OpenCV cannot open) are logged,
  listed in the summary and skipped; they never stop the run.

Rows (CSV or JSONL, chosen by the output suffix) hold: ``file``, ``frame`` (0 for an image),
``time_s`` (empty for an image), ``face`` (index in its frame), ``box`` (left, top, right,
bottom in pixels of the frame), ``score``, ``principal`` (the detector's choice in that frame),
``followed`` (videos: the followed face), ``expression``, the 7 class probabilities under the
class names, and for followed faces ``smoothed_expression`` and ``smoothed_<class>``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferops.data import IMAGE_SUFFIXES
from ferops.inference import Predictor, UploadLimits, UploadRefused

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}
)
OUTPUT_FORMATS = (".csv", ".jsonl")
#: Defaults of the command line, documented in the module docstring.
DEFAULT_FPS = 2.0
DEFAULT_SMOOTH_S = 1.0
DEFAULT_BATCH = 32
#: Below this IoU with the previous followed box a face is a different face.
MIN_FOLLOW_IOU = 0.3
#: Where ``dvc repro export`` writes the bundle in a checkout.
CHECKOUT_BUNDLE = Path("models/bundle")


class MediaError(RuntimeError):
    """A file that cannot be analysed; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Sample:
    """One picture to analyse: an image, or a frame sampled from a video."""

    file: Path
    frame: int
    time_s: float | None
    rgb: np.ndarray


@dataclass
class Summary:
    """Counts of one run; ``bad`` maps each skipped file to its reason."""

    images: int = 0
    videos: int = 0
    frames: int = 0
    frames_without_face: int = 0
    faces: int = 0
    seconds: float = 0.0
    bad: dict[str, str] = field(default_factory=dict)
    timelines: list[str] = field(default_factory=list)
    annotated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        rate = self.frames / self.seconds if self.seconds else 0.0
        return {
            "images": self.images,
            "videos": self.videos,
            "frames": self.frames,
            "frames_without_face": self.frames_without_face,
            "faces": self.faces,
            "bad_files": len(self.bad),
            "seconds": round(self.seconds, 2),
            "images_per_s": round(rate, 2),
            "bad": self.bad,
            "timelines": self.timelines,
            "annotated": self.annotated,
        }


# ---- inputs -------------------------------------------------------------------------------


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def collect_inputs(paths: Iterable[Path]) -> tuple[list[Path], dict[str, str]]:
    """Files to analyse, in order: a file is taken as given (its suffix says image or video);
    a folder gives its image and video files, recursively, sorted. Returns (files, missing)
    where ``missing`` maps each path that does not exist to ``"missing"``."""
    files: list[Path] = []
    missing: dict[str, str] = {}
    for path in map(Path, paths):
        if path.is_dir():
            found = (
                p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            )
            files.extend(sorted(p for p in found if p.is_file()))
        elif path.exists():
            files.append(path)
        else:
            missing[str(path)] = "missing"
    return files, missing


def sample_frames(video: Path, fps: float) -> Iterator[tuple[int, float, np.ndarray]]:
    """(frame index, time in s, RGB frame) of ``video`` every 1/``fps`` s of video time: a frame
    is kept when its timestamp reaches the next sampling time. Raises :class:`MediaError` when
    OpenCV cannot open the file or decodes no frame from it."""
    import cv2

    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise MediaError("unreadable_video", f"OpenCV cannot open {video}")
        native = capture.get(cv2.CAP_PROP_FPS)
        if not native or not np.isfinite(native) or native <= 0:
            raise MediaError("unreadable_video", f"{video} reports no frame rate")
        index, next_time, decoded = 0, 0.0, 0
        while capture.grab():  # grab() skips the colour conversion of frames not kept
            decoded += 1
            now = index / native
            if now + 1e-9 >= next_time:
                ok, bgr = capture.retrieve()
                if ok and bgr is not None:
                    yield index, round(now, 4), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                next_time += 1.0 / fps
                while next_time <= now:  # a sampling rate above the video's own
                    next_time += 1.0 / fps
            index += 1
        if not decoded:
            raise MediaError("unreadable_video", f"no frame could be decoded from {video}")
    finally:
        capture.release()


def read_samples(
    files: Sequence[Path],
    fps: float,
    summary: Summary,
    predictor: Predictor,
    limits: UploadLimits = UploadLimits(),
) -> Iterator[Sample]:
    """Every sample of ``files``; a file that cannot be read is logged, put in
    ``summary.bad`` and skipped (a video that breaks midway keeps the frames read so far).
    Image files are decoded by the inference core's request path
    (:meth:`Predictor.decode_upload`, the service's and the MLflow model's bounds and reasons)."""
    for path in files:
        try:
            if is_video(path):
                summary.videos += 1
                for index, time_s, rgb in sample_frames(path, fps):
                    yield Sample(path, index, time_s, rgb)
            else:
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise UploadRefused("unreadable", f"{type(exc).__name__}: {exc}") from exc
                rgb = predictor.decode_upload(data, False, limits)
                summary.images += 1
                yield Sample(path, 0, None, rgb)
        except (UploadRefused, MediaError) as exc:
            summary.bad[str(path)] = exc.reason
            log.warning("skipped %s: %s", path, exc)
        except Exception as exc:  # noqa: BLE001 - an odd file must never stop a folder
            summary.bad[str(path)] = type(exc).__name__
            log.warning("skipped %s: %s: %s", path, type(exc).__name__, exc)


# ---- classification, batched across files -------------------------------------------------


def analyse_samples(
    predictor: Predictor,
    samples: Iterable[Sample],
    batch_size: int = DEFAULT_BATCH,
) -> Iterator[tuple[Sample, list[dict[str, Any]]]]:
    """(sample, faces as :meth:`Predictor.describe` gives them) in input order; face crops of
    consecutive samples share one classifier call of up to about ``batch_size`` crops."""
    pending: list[tuple[Sample, list, list]] = []

    def flush() -> Iterator[tuple[Sample, list[dict[str, Any]]]]:
        crops = [crop for _, _, sample_crops in pending for crop in sample_crops]
        logits, features = predictor.classify(crops)
        start = 0
        for sample, faces, sample_crops in pending:
            stop = start + len(sample_crops)
            yield sample, predictor.describe(faces, logits[start:stop], features[start:stop])
            start = stop
        pending.clear()

    waiting = 0
    for sample in samples:
        located = predictor.locate_decoded(sample.rgb)
        faces, crops = located.faces, located.crops
        sample.rgb = np.empty((0, 0, 3), np.uint8)  # the pixels are not needed any more
        pending.append((sample, faces, crops))
        waiting += len(crops)
        if waiting >= batch_size or len(pending) >= batch_size:
            yield from flush()
            waiting = 0
    if pending:
        yield from flush()


# ---- video: follow the principal face, smooth it ------------------------------------------


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def follow_principal(
    frames: Sequence[Sequence[dict[str, Any]]], min_iou: float = MIN_FOLLOW_IOU
) -> list[int | None]:
    """Per frame, the index of the followed face (``None`` for a frame without faces): the face
    with the largest IoU with the previous followed box when that IoU is at least ``min_iou``,
    else the detector's principal face (the first face when none is flagged)."""
    chosen: list[int | None] = []
    previous: Sequence[float] | None = None
    for faces in frames:
        if not faces:
            chosen.append(None)
            continue
        pick = None
        if previous is not None:
            overlaps = [iou(previous, face["box"]) for face in faces]
            best = int(np.argmax(overlaps))
            pick = best if overlaps[best] >= min_iou else None
        if pick is None:
            pick = next((i for i, face in enumerate(faces) if face.get("principal")), 0)
        chosen.append(pick)
        previous = faces[pick]["box"]
    return chosen


def smooth(times: Sequence[float], probabilities: np.ndarray, window_s: float) -> np.ndarray:
    """Centred moving average: row i is the mean of the rows whose time is within
    ±``window_s``/2 of ``times[i]``. ``window_s`` 0 returns the input unchanged."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if window_s <= 0 or len(probabilities) == 0:
        return probabilities
    t = np.asarray(times, dtype=np.float64)
    near = np.abs(t[:, None] - t[None, :]) <= window_s / 2 + 1e-9
    return (near @ probabilities) / near.sum(axis=1, keepdims=True)


# ---- rows and outputs ---------------------------------------------------------------------


def face_rows(
    sample: Sample, faces: Sequence[dict[str, Any]], labels: Sequence[str]
) -> list[dict[str, Any]]:
    """One flat row per face of a sample (see the module docstring for the columns)."""
    rows = []
    for index, face in enumerate(faces):
        row: dict[str, Any] = {
            "file": str(sample.file),
            "frame": sample.frame,
            "time_s": sample.time_s,
            "face": index,
            "box": face["box"],
            "score": face["score"],
            "principal": face["principal"],
            "followed": None,
            "expression": face["expression"],
        }
        row.update({label: face["probabilities"][label] for label in labels})
        rows.append(row)
    return rows


def follow_and_smooth(
    rows: list[dict[str, Any]], labels: Sequence[str], window_s: float
) -> list[dict[str, Any]]:
    """Mark the followed face of a video's rows (``followed``) and add its smoothed
    probabilities (``smoothed_<class>``, ``smoothed_expression``); returns the followed rows."""
    by_frame = [list(group) for _, group in itertools.groupby(rows, key=lambda r: r["frame"])]
    picks = follow_principal(by_frame)
    followed = []
    for group, pick in zip(by_frame, picks, strict=True):
        for i, row in enumerate(group):
            row["followed"] = i == pick
        followed.append(group[pick])
    if not followed:
        return []
    probs = np.array([[row[label] for label in labels] for row in followed])
    smoothed = smooth([row["time_s"] for row in followed], probs, window_s)
    for row, values in zip(followed, smoothed, strict=True):
        row.update(
            {
                f"smoothed_{label}": round(float(v), 6)
                for label, v in zip(labels, values, strict=True)
            }
        )
        row["smoothed_expression"] = labels[int(np.argmax(values))]
    return followed


def columns(labels: Sequence[str]) -> list[str]:
    base = [
        "file",
        "frame",
        "time_s",
        "face",
        "box",
        "score",
        "principal",
        "followed",
        "expression",
    ]
    return (
        base + list(labels) + ["smoothed_expression"] + [f"smoothed_{label}" for label in labels]
    )


class RowWriter:
    """Rows to CSV (``box`` as JSON text, empty cells for missing values) or JSON lines."""

    def __init__(self, path: Path, labels: Sequence[str]) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in OUTPUT_FORMATS:
            raise ValueError(f"--out must end in one of {OUTPUT_FORMATS}, got {self.path.name}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self.columns = columns(labels)
        self.csv = None
        if self.path.suffix.lower() == ".csv":
            self.csv = csv.DictWriter(self.handle, fieldnames=self.columns)
            self.csv.writeheader()

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            full = {name: row.get(name) for name in self.columns}
            if self.csv is None:
                self.handle.write(json.dumps(full) + "\n")
            else:
                full["box"] = json.dumps(full["box"])
                self.csv.writerow({k: "" if v is None else v for k, v in full.items()})

    def close(self) -> None:
        self.handle.close()


def plot_timeline(
    rows: Sequence[dict[str, Any]], labels: Sequence[str], out: Path, title: str
) -> Path:
    """PNG of the followed face's smoothed probabilities against video time, one line per class
    (raw probabilities as faint dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [row["time_s"] for row in rows]
    fig, ax = plt.subplots(figsize=(10, 4))
    colours = plt.get_cmap("tab10")
    for i, label in enumerate(labels):
        ax.plot(times, [row[f"smoothed_{label}"] for row in rows], color=colours(i), label=label)
        ax.scatter(times, [row[label] for row in rows], color=colours(i), s=6, alpha=0.3)
    ax.set(xlabel="video time (s)", ylabel="probability (smoothed)", ylim=(0, 1), title=title)
    ax.legend(loc="upper right", ncol=len(labels), fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def annotate_video(video: Path, rows: Sequence[dict[str, Any]], fps: float, out: Path) -> Path:
    """A copy of the sampled frames at ``fps`` (mp4v) with every face boxed; the followed face
    thick, with its smoothed expression and probability."""
    import cv2

    by_frame: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_frame.setdefault(row["frame"], []).append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    try:
        for index, _, rgb in sample_frames(video, fps):
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            if writer is None:
                height, width = bgr.shape[:2]
                writer = cv2.VideoWriter(
                    str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height)
                )
            for row in by_frame.get(index, []):
                left, top, right, bottom = (int(v) for v in row["box"])
                thick = 3 if row["followed"] else 1
                cv2.rectangle(bgr, (left, top), (right, bottom), (0, 220, 0), thick)
                if row["followed"]:
                    label = row["smoothed_expression"]
                    text = f"{label} {row[f'smoothed_{label}']:.2f}"
                    cv2.putText(
                        bgr,
                        text,
                        (left, max(12, top - 6)),
                        cv2.FONT_HERSHEY_SIMPLEX,
                        0.6,
                        (0, 220, 0),
                        2,
                    )
            writer.write(bgr)
    finally:
        if writer is not None:
            writer.release()
    return out


def unique_path(folder: Path, stem: str, suffix: str, taken: set[Path]) -> Path:
    """``folder/stem+suffix``, numbered when another video of the run already took it."""
    path = folder / f"{stem}{suffix}"
    for n in itertools.count(2):
        if path not in taken:
            break
        path = folder / f"{stem}-{n}{suffix}"
    taken.add(path)
    return path


def analyse_paths(
    predictor: Predictor,
    paths: Sequence[Path],
    out: Path,
    fps: float = DEFAULT_FPS,
    smooth_s: float = DEFAULT_SMOOTH_S,
    batch_size: int = DEFAULT_BATCH,
    timeline_dir: Path | None = None,
    annotate: Path | None = None,
    progress: bool = True,
) -> Summary:
    """Analyse images, folders and videos into ``out`` (``.csv`` / ``.jsonl``); videos also get
    a timeline PNG in ``timeline_dir`` (default ``<out stem>-timelines/`` beside ``out``) and,
    with ``annotate``, an annotated copy (one video: that path; several:
    ``<stem>.<video>.mp4``)."""
    from tqdm import tqdm

    start = time.perf_counter()
    files, missing = collect_inputs(paths)
    summary = Summary(bad=dict(missing))
    for path in missing:
        log.warning("skipped %s: it does not exist", path)
    labels = predictor.labels
    out = Path(out)
    timeline_dir = Path(timeline_dir) if timeline_dir else out.parent / f"{out.stem}-timelines"
    videos = [f for f in files if is_video(f)]
    taken: set[Path] = set()
    with ExitStack() as stack:
        writer = RowWriter(out, labels)
        stack.callback(writer.close)
        bar = stack.enter_context(tqdm(total=len(files), unit="file", disable=not progress))
        samples = read_samples(files, fps, summary, predictor, UploadLimits.from_env())
        results = analyse_samples(predictor, samples, batch_size)
        for file, group in itertools.groupby(results, key=lambda item: item[0].file):
            rows: list[dict[str, Any]] = []
            for sample, faces in group:
                summary.frames += 1
                summary.faces += len(faces)
                summary.frames_without_face += not faces
                rows.extend(face_rows(sample, faces, labels))
            if is_video(file):
                followed = follow_and_smooth(rows, labels, smooth_s)
                if followed:
                    png = unique_path(timeline_dir, file.stem, ".png", taken)
                    summary.timelines.append(str(plot_timeline(followed, labels, png, file.name)))
                if annotate is not None:
                    target = Path(annotate)
                    if len(videos) > 1:
                        target = unique_path(
                            target.parent, f"{target.stem}.{file.stem}", target.suffix, taken
                        )
                    summary.annotated.append(str(annotate_video(file, rows, fps, target)))
            writer.write(rows)
            bar.update(1)
            bar.set_postfix(frames=summary.frames, faces=summary.faces, bad=len(summary.bad))
        bar.update(len(files) - bar.n)  # files that gave no sample (bad ones)
    summary.seconds = time.perf_counter() - start
    return summary


# ---- the bundle and the command line ------------------------------------------------------


def champion_bundle(folder: Path, alias: str = "champion", name: str | None = None) -> Path:
    """Download the registry's ``alias`` version (default: the champion, as ``ferops-models
    import-bento`` does) into ``folder``; returns the bundle folder inside it."""
    import mlflow

    from ferops import MODEL_NAME
    from ferops.packaging import download_bundle, registered_version
    from ferops.tracking import tracking_uri

    name = name or MODEL_NAME
    mlflow.set_tracking_uri(tracking_uri())
    found = registered_version(alias, None, name)
    log.info("using %s v%s (@%s) from %s", name, found.version, alias, tracking_uri())
    return download_bundle(found, folder)


def add_score_command(sub) -> None:
    """``ferops score``: the registered model over a table of images on Spark → Parquet."""
    from ferops import spark_scoring

    cmd = sub.add_parser(
        "score",
        help="batch scoring on Spark: the registered model over many images → Parquet",
        description=spark_scoring.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("source", help="folder / glob of images, or a .parquet / .csv table of paths")
    cmd.add_argument("--out", required=True, help="Parquet folder to write (overwritten)")
    cmd.add_argument(
        "--model",
        default=None,
        help="registered model URI (default: models:/ferops-resnet18@champion, from "
        "MLFLOW_TRACKING_URI or mlflow.db)",
    )
    cmd.add_argument("--master", default=spark_scoring.DEFAULT_MASTER, help="Spark master URL")
    cmd.add_argument("--driver-memory", default=spark_scoring.DEFAULT_DRIVER_MEMORY)
    cmd.add_argument("--executor-memory", default=None, help="per executor (cluster masters)")
    cmd.add_argument(
        "--partitions", type=int, default=None, help="at least this many (default: all cores)"
    )
    cmd.add_argument(
        "--batch-rows",
        type=int,
        default=spark_scoring.DEFAULT_BATCH_ROWS,
        help="images per pyfunc call (their face crops share one classifier batch)",
    )


def score_command(args: argparse.Namespace) -> int:
    import mlflow

    from ferops.spark_scoring import champion_uri, score_to_parquet
    from ferops.tracking import tracking_uri

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    mlflow.set_tracking_uri(tracking_uri())
    model = args.model or champion_uri()
    result = score_to_parquet(
        args.source,
        args.out,
        model,
        args.master,
        args.driver_memory,
        args.executor_memory,
        args.partitions,
        args.batch_rows,
    )
    log.info("summary: %s", json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``ferops analyse`` / ``ferops score``: see the module docstrings."""
    parser = argparse.ArgumentParser(prog="ferops", description="ferops command line")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser(
        "analyse",
        help="expressions of the faces in images, folders and videos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("paths", nargs="+", type=Path, help="images, folders (recursive), videos")
    cmd.add_argument("--out", type=Path, default=Path("analysis.csv"), help=".csv or .jsonl")
    cmd.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help=f"serving bundle folder (default: {CHECKOUT_BUNDLE} when present, else "
        "the MLflow registry's champion, from MLFLOW_TRACKING_URI or mlflow.db)",
    )
    cmd.add_argument(
        "--fps", type=float, default=DEFAULT_FPS, help="video frames sampled a second"
    )
    cmd.add_argument(
        "--smooth",
        type=float,
        default=DEFAULT_SMOOTH_S,
        help="centred moving-average window in seconds of video (0: none)",
    )
    cmd.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help="face crops per classifier call"
    )
    cmd.add_argument("--timelines", type=Path, default=None, help="folder for the timeline PNGs")
    cmd.add_argument("--annotate", type=Path, default=None, help="annotated video to write (.mp4)")
    cmd.add_argument("--providers", default="auto", choices=("auto", "cpu", "cuda"))
    cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    add_score_command(sub)
    args = parser.parse_args(argv)
    if args.command == "score":
        return score_command(args)
    if args.fps <= 0 or args.smooth < 0 or args.batch < 1:
        parser.error("--fps must be > 0, --smooth >= 0 and --batch >= 1")
    if args.out.suffix.lower() not in OUTPUT_FORMATS:
        parser.error(f"--out must end in one of {OUTPUT_FORMATS}")

    from tqdm.contrib.logging import logging_redirect_tqdm

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="ferops-analyse-") as tmp, logging_redirect_tqdm():
        bundle = args.bundle
        if bundle is None and CHECKOUT_BUNDLE.is_dir():
            bundle = CHECKOUT_BUNDLE
        elif bundle is None:
            from mlflow.exceptions import MlflowException

            try:
                bundle = champion_bundle(Path(tmp))
            except (MlflowException, OSError) as exc:
                parser.error(
                    f"no --bundle, no {CHECKOUT_BUNDLE} here and no champion in the "
                    f"registry ({type(exc).__name__}: {exc})"
                )
        predictor = Predictor(bundle, providers=args.providers)
        summary = analyse_paths(
            predictor,
            args.paths,
            args.out,
            args.fps,
            args.smooth,
            args.batch,
            args.timelines,
            args.annotate,
            progress=not args.quiet,
        )
    counts = summary.to_dict()
    log.info(
        "%d images, %d videos, %d frames (%d without a face), %d faces in %.1f s "
        "(%.1f images/s); %d bad files skipped → %s",
        counts["images"],
        counts["videos"],
        counts["frames"],
        counts["frames_without_face"],
        counts["faces"],
        counts["seconds"],
        counts["images_per_s"],
        counts["bad_files"],
        args.out,
    )
    for path, reason in summary.bad.items():
        log.info("skipped: %s (%s)", path, reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
