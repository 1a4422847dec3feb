"""The BentoML service over real HTTP: a real `bentoml serve` on 127.0.0.1 serving a small real
bundle that went registry → `ferops-models import-bento` → BentoML model store; real SFEW frames
and FER2013 faces; a corpus of bad uploads; concurrent clients; `bentoml build` + serving the
built bento."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from ferops.images import decode_image, read_image, to_gray
from ferops.inference import Predictor
from ferops.processes import free_port, stop_process_group, wait_http
from tests.bundles import make_bundle
from tests.paths import CLEAR_FRAMES, ROOT, png_bytes
from tests.service.client import (
    BIN,
    MODEL_NAME,
    _encode,
    _env,
    _own_home,
    _post,
    _serve,
)


def test_info_reports_model_and_real_providers(service: str, model_tag: str) -> None:
    info = requests.post(f"{service}/info", json={}, timeout=30).json()
    assert info["model"] == model_tag
    assert (
        info["metadata"]["mlflow_name"] == MODEL_NAME
        and info["metadata"]["mlflow_alias"] == "champion"
    )
    assert info["providers"][0] == (
        "CUDAExecutionProvider" if _has_gpu() else "CPUExecutionProvider"
    )
    assert info["batching"] is True and info["max_batch_size"] > 1
    assert [step["detector"] for step in info["detection_cascade"]] == ["yunet"]
    spec = requests.get(f"{service}/docs.json", timeout=30).json()
    assert {"/detect", "/predict", "/explain", "/info"} <= set(spec["paths"])
    assert "no_face" in json.dumps(spec["paths"]["/detect"])  # the documented no-face answer


def _has_gpu() -> bool:
    from ferops.inference import cuda_device_count

    return cuda_device_count() > 0


def test_detect_finds_the_face(service: str, sfew_root: Path) -> None:
    for frame in CLEAR_FRAMES:
        answer = _post(service, "detect", (sfew_root / frame).read_bytes(), "f.webp")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["width"], body["height"]) == (720, 576) and body["reason"] is None
        assert len(body["faces"]) >= 1 and sum(f["principal"] for f in body["faces"]) == 1
        left, top, right, bottom = next(f for f in body["faces"] if f["principal"])["box"]
        assert 0 <= left < right <= 720 and 0 <= top < bottom <= 576 and right - left >= 40


def test_predict_and_explain_agree_with_the_inference_core(
    service: str, bundle, sfew_root: Path, fer_root: Path
) -> None:
    local = Predictor(bundle[0], providers="cpu")
    faces = sorted((fer_root / "publictest" / "Surprise").iterdir())[:2]
    cases = [(sfew_root / f, "false") for f in CLEAR_FRAMES] + [(f, "true") for f in faces]
    for path, crop in cases:
        data = path.read_bytes()
        expected = local.analyse(decode_image(data), explain=True, is_crop=crop == "true")
        for route in ("predict", "explain"):
            answer = _post(service, route, data, path.name, crop=crop)
            assert answer.status_code == 200, answer.text
            got = answer.json()["faces"]
            assert len(got) == len(expected) >= 1
            for g, e in zip(got, expected, strict=True):
                assert len(g["probabilities"]) == 7
                assert sum(g["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
                assert g["expression"] == e["expression"] and g["box"] == e["box"]
                np.testing.assert_allclose(
                    list(g["probabilities"].values()), list(e["probabilities"].values()), atol=1e-4
                )
                if route == "explain":
                    parts = {
                        "nearest_pattern",
                        "important_inputs",
                        "rules_fired",
                        "next_most_likely",
                    }
                    assert parts <= set(g["explanation"])
                    assert (
                        g["explanation"]["rules_fired"]["rule"]
                        == e["explanation"]["rules_fired"]["rule"]
                    )
                    assert g["explanation"]["next_most_likely"]["class"] != g["expression"]
                else:
                    assert g.get("explanation") is None


def _bad_inputs(frame: Path) -> list[tuple[str, dict, int, str | None]]:
    """(kind, request, expected status, expected error code or 200-reason)."""
    rgb = read_image(frame)
    jpeg = _encode(rgb, "JPEG", quality=90)
    header_bomb = bytearray(_encode(np.zeros((8, 8), np.uint8)))
    header_bomb[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR width/height: 10 gigapixels
    header_bomb[29:33] = zlib.crc32(bytes(header_bomb[12:29])).to_bytes(4, "big")  # valid chunk
    bomb = _encode(np.zeros((5000, 6000), np.uint8))  # 30 MP of zeros: tiny file, huge bitmap
    cases: list[tuple[str, dict, int, str | None]] = [
        ("zero_bytes", {"data": b""}, 400, "empty"),
        ("text", {"data": b"just some words\n" * 50, "name": "x.txt"}, 415, "not_an_image"),
        (
            "html",
            {"data": b"<html><body><img src=x></body></html>", "name": "x.html"},
            415,
            "not_an_image",
        ),
        (
            "svg",
            {"data": b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="9"/></svg>'},
            415,
            "not_an_image",
        ),
        ("truncated_jpeg", {"data": jpeg[: len(jpeg) // 2]}, 422, "corrupt"),
        ("truncated_webp", {"data": frame.read_bytes()[:5000]}, 422, "corrupt"),
        ("png_header_bomb", {"data": bytes(header_bomb)}, 413, "too_many_pixels"),
        ("decompression_bomb", {"data": bomb}, 413, "too_many_pixels"),
        ("oversized_upload", {"data": os.urandom(17 * 1024 * 1024)}, 413, "too_large"),
        ("one_pixel", {"data": _encode(rgb[:1, :1])}, 200, "image_too_small"),
        ("no_face", {"data": _encode(np.full((240, 320, 3), 128, np.uint8))}, 200, "no_face"),
        (
            "crop_not_an_image",
            {"data": b"%PDF-1.4 not really", "form": {"crop": "true"}},
            415,
            "not_an_image",
        ),
        # a crop is aligned like every face (landmarks inside it): no face, no invented expression
        (
            "crop_black",
            {"data": _encode(np.zeros((96, 96, 3), np.uint8)), "form": {"crop": "true"}},
            200,
            "no_face",
        ),
        (
            "crop_noise",
            {
                "data": _encode(
                    np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
                ),
                "form": {"crop": "true"},
            },
            200,
            "no_face",
        ),
        (
            "crop_one_pixel",
            {"data": _encode(rgb[:1, :1]), "form": {"crop": "true"}},
            200,
            "no_face",
        ),
        (
            "crop_sliver_8x4000",
            {"data": _encode(np.zeros((8, 4000), np.uint8) + 90), "form": {"crop": "true"}},
            422,
            "bad_aspect",
        ),
        (
            "frame_sliver_16x4000",
            {"data": _encode(np.zeros((16, 4000), np.uint8) + 90)},
            422,
            "bad_aspect",
        ),
        ("json_instead_of_upload", {"json": {"image": "aGVsbG8="}}, 400, None),
        ("wrong_field_name", {"files": {"picture": ("f.png", _encode(rgb))}}, 400, "bad_form"),
        (
            "crop_flag_as_file",
            {"files": {"image": ("f.jpg", jpeg), "crop": ("c.jpg", jpeg)}},
            400,
            "bad_form",
        ),
        (
            "two_images",
            {"files": [("image", ("a.jpg", jpeg)), ("image", ("b.jpg", jpeg))]},
            400,
            "bad_form",
        ),
        (
            "multipart_without_boundary",
            {"raw": jpeg, "type": "multipart/form-data"},
            400,
            "bad_form",
        ),
        (
            "multipart_garbage",
            {"raw": b"garbage", "type": "multipart/form-data; boundary=xyz"},
            400,
            "bad_form",
        ),
        ("raw_jpeg_body", {"raw": jpeg, "type": "image/jpeg"}, 400, None),
        ("bad_crop_flag", {"data": jpeg, "form": {"crop": "maybe"}}, 400, None),
    ]
    return cases


def test_bad_inputs_get_defined_answers_and_the_server_survives(
    service: str, clear_frame: Path
) -> None:
    outcomes = {}
    for kind, req, status, code in _bad_inputs(clear_frame):
        if "json" in req:
            answer = requests.post(f"{service}/predict", json=req["json"], timeout=60)
        elif "files" in req:
            answer = requests.post(f"{service}/predict", files=req["files"], timeout=60)
        elif "raw" in req:
            answer = requests.post(
                f"{service}/predict",
                data=req["raw"],
                headers={"Content-Type": req["type"]},
                timeout=60,
            )
        else:
            answer = _post(
                service, "predict", req["data"], req.get("name", "f.png"), **req.get("form", {})
            )
        outcomes[kind] = answer.status_code
        assert answer.status_code == status, f"{kind}: {answer.status_code} {answer.text[:300]}"
        body = answer.json()  # every answer is JSON
        if status == 200:
            assert body["faces"] == [] and body["reason"] == code, kind
        elif code is not None:
            assert body["error"] == code and body["detail"], kind
        else:
            assert "error" in json.dumps(body), kind
    assert len(outcomes) >= 20 and all(s < 500 for s in outcomes.values())
    assert requests.get(f"{service}/readyz", timeout=10).status_code == 200
    assert _post(service, "predict", clear_frame.read_bytes()).json()["faces"]


def _hostile_crops() -> dict[str, bytes]:
    """Tiny PNGs of huge, thin images (35-45 KB each): once 500s and 13-21 s of CPU."""
    shapes = {"2x12M": (2, 12_000_000), "4x6M": (4, 6_000_000), "6Mx4": (6_000_000, 4)}
    return {kind: _encode(np.zeros(shape, np.uint8)) for kind, shape in shapes.items()}


def test_hostile_crops_get_a_4xx_at_once_while_a_valid_request_is_answered(
    service: str, clear_frame: Path
) -> None:
    frame = clear_frame.read_bytes()
    with ThreadPoolExecutor(4) as pool:
        valid = pool.submit(_post, service, "explain", frame)
        for kind, data in _hostile_crops().items():
            answer = _post(service, "predict", data, crop="true")
            assert answer.status_code == 422 and answer.json()["error"] == "bad_aspect", kind
            # refused on the header: milliseconds (was 13-21 s); 2 s leaves room for a busy CI
            assert answer.elapsed.total_seconds() < 2.0, (kind, answer.elapsed)
        assert valid.result().status_code == 200 and valid.result().json()["faces"]


@pytest.fixture(scope="module")
def small_queue_service(
    model_tag: str, bento_home: Path, tmp_path_factory: pytest.TempPathFactory
):
    """The same model served with lanes of 2 requests: overload is easy to reach."""
    home = _own_home(bento_home, tmp_path_factory.mktemp("bentoml-small"))
    proc, handle, url = _serve(
        "service:FerService", home, home / "small.log", FEROPS_MAX_QUEUE="2"
    )
    try:
        yield url, proc
    finally:
        stop_process_group(proc)
        handle.close()


def test_overload_answers_503_with_retry_after_and_crops_do_not_wait(
    small_queue_service, clear_frame: Path, fer_root: Path
) -> None:
    """12 big frames at once into a frame lane of 2: the rest get 503 + Retry-After at once,
    never a 500; a crop sent meanwhile is answered from its own lane; afterwards all is well."""
    url, _ = small_queue_service
    rgb = read_image(clear_frame)
    big = _encode(np.asarray(Image.fromarray(rgb).resize((2880, 2304))), "JPEG", quality=90)
    crop = next((fer_root / "publictest" / "Happy").iterdir()).read_bytes()
    with ThreadPoolExecutor(13) as pool:
        frames = [pool.submit(_post, url, "predict", big) for _ in range(12)]
        crop_answer = pool.submit(_post, url, "predict", crop, crop="true").result()
        answers = [f.result() for f in frames]
    codes = sorted(a.status_code for a in answers)
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["error"] == "overloaded", answer.text
            assert int(answer.headers["Retry-After"]) >= 1
    assert crop_answer.status_code == 200 and len(crop_answer.json()["faces"]) == 1, (
        crop_answer.text
    )
    assert _post(url, "predict", clear_frame.read_bytes()).status_code == 200


def test_a_dead_classifier_is_a_503_and_comes_back(small_queue_service, clear_frame: Path) -> None:
    """SIGKILL the network's process: answers are 503 (never 500) until BentoML has restarted
    it, then 200 again."""
    import signal
    import time

    import psutil

    url, proc = small_queue_service
    frame = clear_frame.read_bytes()
    assert _post(url, "predict", frame).status_code == 200
    workers = [
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if "ferops-classifier" in " ".join(p.cmdline())
    ]
    assert workers, "no classifier process found"
    for worker in workers:
        worker.send_signal(signal.SIGKILL)
    seen, deadline = [], time.monotonic() + 120
    while time.monotonic() < deadline:
        answer = _post(url, "predict", frame)
        seen.append(answer.status_code)
        assert answer.status_code in (200, 503), answer.text[:300]
        if answer.status_code == 503:
            assert answer.json()["error"] == "classifier_unavailable", answer.text
        elif answer.json()["faces"]:
            break
        time.sleep(0.5)
    assert seen[-1] == 200, seen


def test_unusual_but_valid_images_are_answered_correctly(service: str, clear_frame: Path) -> None:
    rgb = read_image(clear_frame)
    upright = _post(service, "detect", _encode(rgb)).json()["faces"]
    box = np.array(next(f for f in upright if f["principal"])["box"])
    gray16 = to_gray(rgb).astype(np.uint16) * 257
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: stored 90° counter-clockwise, shown rotated back
    rotated = _encode(
        np.ascontiguousarray(np.rot90(rgb, k=1)), "JPEG", quality=95, exif=exif.tobytes()
    )
    big = np.asarray(Image.fromarray(rgb).resize((720 * 4, 576 * 4), Image.BICUBIC))
    variants = {
        "gray16_png": (_encode(gray16), 1.0),
        "cmyk_jpeg": (_encode(rgb, "JPEG", mode="CMYK", quality=95), 1.0),
        "rgba_png": (_encode(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])), 1.0),
        "palette_png": (_encode(rgb, mode="P"), 1.0),
        "exif_rotated_jpeg": (rotated, 1.0),
        "huge_11mp_jpeg": (_encode(big, "JPEG", quality=80), 4.0),
    }
    for kind, (data, scale) in variants.items():
        answer = _post(service, "detect", data)
        assert answer.status_code == 200, f"{kind}: {answer.text[:300]}"
        faces = answer.json()["faces"]
        assert faces, f"{kind}: no face found"
        found = np.array(next(f for f in faces if f["principal"])["box"])
        assert np.abs(found - box * scale).max() <= 12 * scale, f"{kind}: {found} vs {box * scale}"


def test_sixteen_concurrent_clients(service: str, fer_root: Path) -> None:
    crops = [p.read_bytes() for p in sorted((fer_root / "publictest" / "Happy").iterdir())[:16]]

    def client(i: int) -> list[int]:
        codes = []
        with requests.Session() as session:
            for _ in range(25):
                answer = session.post(
                    f"{service}/predict",
                    files={"image": ("c.png", crops[i])},
                    data={"crop": "true"},
                    timeout=120,
                )
                ok = answer.status_code == 200 and len(answer.json()["faces"]) == 1
                codes.append(200 if ok else answer.status_code)
        return codes

    with ThreadPoolExecutor(16) as pool:
        codes = [c for result in pool.map(client, range(16)) for c in result]
    assert len(codes) == 400 and set(codes) == {200}, {c: codes.count(c) for c in set(codes)}


def _metrics(url: str) -> dict[str, float]:
    """The service's own samples on /metrics: ``name{labels}`` → value."""
    text = requests.get(f"{url}/metrics", timeout=30).text
    samples = {}
    for line in text.splitlines():
        if line.startswith("ferops_"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def test_metrics_count_the_answers_of_known_requests(
    service: str, model_tag: str, clear_frame: Path
) -> None:
    """/metrics carries the model served, answers per outcome and expression, and errors by
    status and reason, counted exactly for requests whose answers are known."""
    before = _metrics(service)
    face = _post(service, "predict", clear_frame.read_bytes())
    blank = _post(service, "predict", png_bytes(np.full((200, 200, 3), 128, np.uint8)))
    corrupt = _post(service, "explain", clear_frame.read_bytes()[:2000], name="cut.webp")
    assert face.status_code == 200 and blank.json()["reason"] == "no_face"
    assert corrupt.status_code == 422 and corrupt.json()["error"] == "corrupt", corrupt.text
    after = _metrics(service)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    expression = face.json()["faces"][0]["expression"]
    changed = {k: delta(k) for k in after if delta(k)}
    assert after[f'ferops_model_info{{model="{model_tag}"}}'] == 1.0
    assert delta('ferops_answers_total{outcome="faces",route="/predict"}') == 1, changed
    assert delta('ferops_answers_total{outcome="no_face",route="/predict"}') == 1, changed
    assert delta(
        f'ferops_face_expressions_total{{expression="{expression}",route="/predict"}}'
    ) == len(face.json()["faces"])
    assert delta('ferops_errors_total{reason="corrupt",route="/explain",status="422"}') == 1
    assert after['ferops_lane_depth{lane="frames"}'] == 0.0


def test_the_built_bento_serves_from_its_own_environment(
    model_tag: str, bento_home: Path, clear_frame: Path, tmp_path: Path
) -> None:
    """`make bento`'s build (the ferops wheel + `bentoml build`), then a fresh virtual environment
    made only from the bento's lock and wheels (scripts/bento_env.sh): ferops is imported from
    that environment, not the checkout, and /readyz, /predict, /explain with its occlusion map,
    /ui/ and /metrics answer."""
    bento_home = _own_home(bento_home, tmp_path / "home")
    env = _env(bento_home, PYTHON=sys.executable)
    build = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_bento.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    tag = build.stdout.strip().splitlines()[-1]
    name, version = tag.split(":")
    bento = bento_home / "bentos" / name / version
    assert sorted(p.name for p in (bento / "src").iterdir()) == ["bentofile.yaml", "service.py"]
    assert [p.name for p in (bento / "env" / "python" / "wheels").iterdir()] == [
        "ferops-0.1.0-py3-none-any.whl"
    ]
    locked = (bento / "env" / "python" / "requirements.lock.txt").read_text()
    serving = (ROOT / "src" / "ferops" / "requirements-serving.txt").read_text()
    for pin in (line for line in serving.splitlines() if line and not line.startswith("#")):
        assert pin in locked.splitlines(), pin  # one serving list, locked as written
    assert "\nonnxruntime==" not in locked and "torch" not in locked and "mlflow" not in locked
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "nvidia/cuda:12.8.1-cudnn-runtime" in dockerfile and "libgomp1" in dockerfile
    assert model_tag in (bento / "bento.yaml").read_text()

    venv = tmp_path / "venv"
    made = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bento_env.sh"), str(bento), str(venv)],
        env=dict(env, PYTHON=sys._base_executable, UV=str(BIN / "uv")),
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import ferops; print(ferops.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(venv)), where.stdout

    clean = {
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "BENTOML_HOME": str(bento_home),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    port = free_port()
    with open(tmp_path / "bento.log", "w") as handle:
        proc = subprocess.Popen(
            [
                str(venv / "bin" / "bentoml"),
                "serve",
                tag,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=tmp_path,
            env=clean,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/readyz", timeout=180, proc=proc)
            answer = _post(url, "predict", clear_frame.read_bytes())
            assert answer.status_code == 200 and answer.json()["faces"], answer.text[:300]
            explained = _post(url, "explain", clear_frame.read_bytes())
            face = explained.json()["faces"][0]
            assert face["explanation"]["occlusion"]["cells"], explained.text[:300]
            page = requests.get(f"{url}/ui/", timeout=30)
            assert page.status_code == 200 and "<html" in page.text.lower()
            assert (
                f'ferops_model_info{{model="{model_tag}"}}'
                in requests.get(f"{url}/metrics", timeout=30).text
            )
        except (RuntimeError, TimeoutError):
            pytest.fail(
                f"the bento did not start:\n{(tmp_path / 'bento.log').read_text()[-3000:]}"
            )
        finally:
            stop_process_group(proc)


def test_rollback_reaches_the_served_model_and_info_has_no_credentials(
    mlflow_server: str, tmp_path: Path, fer_root: Path
) -> None:
    """Two versions imported, `ferops-models rollback 1`, `import-bento` again: `bentoml serve`
    answers with version 1 (its tag in /info, its outputs), and /info never shows the password
    of the tracking URI the import went through."""
    import mlflow

    from ferops.registry import register_bundle

    name, home = "ferops-rollback-test", tmp_path / "bentoml"
    with_password = mlflow_server.replace("http://", "http://ferops:s3cret@")
    env = _env(home, MLFLOW_TRACKING_URI=with_password)

    def models(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "ferops.models_cli", "--name", name, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1]

    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("rollback-tests")
    bundles, tags = [], []
    for seed, accuracy in ((21, 0.4), (22, 0.5)):
        bundle, weights = make_bundle(tmp_path / str(seed), seed)
        with mlflow.start_run() as run:
            run_id = run.info.run_id
        decision = register_bundle(
            bundle, weights, run_id, {"split_definition": "r"}, accuracy, name=name
        )
        assert decision["alias"] == "champion"
        bundles.append(bundle)
        tags.append(models("import-bento"))
    assert tags[0] != tags[1]
    models("rollback", "1", "--why", "v2 misbehaves", "--who", "test")
    assert models("import-bento") == tags[0]  # already in the store: no copy, but now latest

    proc, handle, url = _serve("service:FerService", home, tmp_path / "serve.log")
    try:
        info = requests.post(f"{url}/info", json={}, timeout=30)
        assert info.json()["model"] == tags[0] and info.json()["metadata"]["mlflow_version"] == 1
        assert (
            info.json()["metadata"]["tracking_uri"] == mlflow_server and "s3cret" not in info.text
        )
        for path in sorted((fer_root / "publictest" / "Sad").iterdir())[:2]:
            data = path.read_bytes()
            got = _post(url, "predict", data, path.name, crop="true").json()["faces"][0][
                "probabilities"
            ]
            first, second = (
                Predictor(b, providers="cpu").analyse(decode_image(data), is_crop=True)[0]
                for b in bundles
            )
            np.testing.assert_allclose(
                list(got.values()), list(first["probabilities"].values()), atol=1e-4
            )
            assert not np.allclose(
                list(got.values()), list(second["probabilities"].values()), atol=1e-4
            )
    finally:
        stop_process_group(proc)
        handle.close()
    models_yaml = "\n".join(p.read_text() for p in (home / "models").rglob("model.yaml"))
    assert "s3cret" not in models_yaml, "the BentoML store (and so the bento) holds no credentials"


def test_uris_shown_to_clients_carry_no_credentials() -> None:
    from ferops.api import public_metadata, redact_uri

    assert redact_uri("https://alice:s3cret@mlflow.example.com:8443/x?token=abc#frag") == (
        "https://mlflow.example.com:8443/x"
    )
    assert redact_uri("postgresql://ml:pw@db:5432/mlflow") == "postgresql://db:5432/mlflow"
    for kept in (
        "sqlite:///mlflow.db",
        "http://127.0.0.1:5000",
        "file:///srv/mlruns",
        "not a uri",
    ):
        assert redact_uri(kept) == kept
    assert redact_uri("http://u:p@[::1") == "<redacted>"  # unparseable: nothing of it is shown
    shown = public_metadata({"tracking_uri": "https://u:p@h/?t=1", "mlflow_version": 3, "a": "b"})
    assert shown == {"tracking_uri": "https://h/", "mlflow_version": 3, "a": "b"}


def test_one_request_path_gives_the_same_reasons_everywhere(
    service: str, bundle, clear_frame: Path, tmp_path: Path
) -> None:
    """The same bad and odd uploads through the service, the MLflow pyfunc (in process) and
    `ferops analyse`'s reading (frames only: it has no crop mode) get the same error codes and
    the same no-face reasons: all three run the inference core's request path."""
    from types import SimpleNamespace

    from ferops.analyse import Summary, read_samples
    from ferops.registry import BundleModel

    model = BundleModel()
    model.load_context(SimpleNamespace(artifacts={"bundle": str(bundle[0])}))
    predictor = Predictor(bundle[0])
    rgb = read_image(clear_frame)
    uploads = [(kind, req["data"], req.get("form", {}).get("crop") == "true")
               for kind, req, _, _ in _bad_inputs(clear_frame) if "data" in req]  # fmt: skip
    uploads += [
        ("frame", clear_frame.read_bytes(), False),
        ("crop_sliver", _encode(np.zeros((50, 250, 3), np.uint8)), True),  # aspect 5 > 4
        ("crop_tiny", _encode(rgb[:12, :12]), True),
    ]
    for kind, data, crop in uploads:
        answer = _post(service, "predict", data, **({"crop": "true"} if crop else {})).json()
        via_service = answer.get("error") or answer.get("reason") or len(answer["faces"])
        row = model.predict(None, {"image": [data], "crop": [crop]})[0]
        via_pyfunc = row["error"] or row["reason"] or len(row["faces"])
        assert via_pyfunc == via_service, (kind, via_service, via_pyfunc)
        if crop:
            continue
        path = tmp_path / f"{kind}.img"
        path.write_bytes(data)
        summary = Summary()
        samples = list(read_samples([path], 1.0, summary, predictor))
        if samples:
            located = predictor.locate_decoded(samples[0].rgb)
            via_analyse = located.reason or len(located.faces)
        else:
            via_analyse = summary.bad[str(path)]
        assert via_analyse == via_service, (kind, via_service, via_analyse)
