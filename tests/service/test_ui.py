"""The web page in a real browser: headless Chromium (tests/service/browser.py) against a real
`bentoml serve` (the service fixtures of tests/service/conftest.py), a real SFEW frame and a
corrupt upload. Screenshots go to ``$FEROPS_ARTIFACTS`` (else a pytest temporary folder)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import requests

from ferops.api import UI_ROUTE
from ferops.images import read_image
from ferops.inference import Predictor
from ferops.occlusion import GRID, occlusion_maps
from tests.paths import CLEAR_FRAMES, png_bytes
from tests.service.browser import BrowserError, Chromium

# The module-scoped service of the service tests: a small real bundle registered in a real MLflow
# server, imported with `ferops-models import-bento`, served by `bentoml serve`.
from tests.service.client import _post

log = logging.getLogger(__name__)

#: Where the page draws what it was given, read back from the DOM in the upload's pixels.
SHOWN = """(() => {
  const image = document.getElementById("image");
  const frame = image.getBoundingClientRect();
  const sx = image.naturalWidth / frame.width, sy = image.naturalHeight / frame.height;
  const boxes = [...document.querySelectorAll(".face-box")].map((node) => {
    const r = node.getBoundingClientRect();
    return {number: Number(node.dataset.number), principal: node.classList.contains("principal"),
            tag: node.querySelector(".tag").textContent,
            box: [(r.left - frame.left) * sx, (r.top - frame.top) * sy,
                  (r.right - frame.left) * sx, (r.bottom - frame.top) * sy]};
  });
  const cards = [...document.querySelectorAll(".face-card")].map((node) => ({
    number: Number(node.dataset.number), principal: node.classList.contains("principal"),
    expression: node.querySelector(".expression").textContent,
    bars: Object.fromEntries([...node.querySelectorAll(".bar")].map((bar) =>
      [bar.dataset.label, parseFloat(bar.querySelector(".fill").style.width) / 100])),
    explanation: node.querySelector(".explanation")?.innerText ?? ""}));
  return {state: document.getElementById("app").dataset.state, boxes, cards};
})()"""

#: The message line, when a person can see it.
MESSAGE = """(() => {
  const m = document.getElementById("message");
  const visible = !m.hidden && m.getBoundingClientRect().height > 0;
  return {visible, kind: m.className, text: m.textContent,
          state: document.getElementById("app").dataset.state,
          boxes: document.querySelectorAll(".face-box").length,
          cards: document.querySelectorAll(".face-card").length};
})()"""

#: The occlusion map drawn for each face: its canvas, the alpha of each cell, and the bounds of
#: the drawn (transformed) canvas as fractions of the displayed image (left, top, right, bottom).
MAPS = """(() => {
  const image = document.getElementById("image").getBoundingClientRect();
  return [...document.querySelectorAll(".occlusion-frame")].map((node) => {
    const canvas = node.querySelector("canvas.occlusion");
    if (!canvas) return {number: Number(node.dataset.number), canvas: false};
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    const r = canvas.getBoundingClientRect();
    return {number: Number(node.dataset.number), canvas: true, grid: Number(canvas.dataset.grid),
            width: canvas.width, height: canvas.height,
            alpha: [...pixels].filter((_, i) => i % 4 === 3),
            bounds: [(r.left - image.left) / image.width, (r.top - image.top) / image.height,
                     (r.right - image.left) / image.width, (r.bottom - image.top) / image.height]};
  });
})()"""

SETTLED = "['done', 'empty', 'error'].includes(document.getElementById('app').dataset.state)"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("FEROPS_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("ui-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def page(service: str, tmp_path_factory: pytest.TempPathFactory):
    """The web page, loaded from ``/ui`` (redirected to ``/ui/``) in headless Chromium."""
    try:
        browser = Chromium(tmp_path_factory.mktemp("chromium"))
    except BrowserError as exc:
        pytest.fail(str(exc))
    with browser:
        browser.open(f"{service}{UI_ROUTE}")
        assert browser.evaluate("location.pathname") == f"{UI_ROUTE}/"
        assert browser.evaluate("document.querySelector('#file') !== null")
        yield browser


def _upload(page: Chromium, path: Path) -> None:
    page.evaluate("document.getElementById('app').dataset.state = 'idle'")
    page.choose_files("#file", [path])
    page.wait_for(SETTLED, timeout=120)


def _service(page: Chromium) -> str:
    """The service the page was loaded from."""
    return page.evaluate("location.origin")


def test_page_draws_the_faces_bars_and_explanation(
    page: Chromium, sfew_root: Path, artifacts: Path
) -> None:
    """The boxes drawn, the labels and the bars are /predict's answer on the same bytes; the
    explanation names the rule, the nearest pattern and the next class of /explain's."""
    url = _service(page)
    frame = sfew_root / CLEAR_FRAMES[0]
    predicted = _post(url, "predict", frame.read_bytes(), frame.name).json()["faces"]
    explained = _post(url, "explain", frame.read_bytes(), frame.name).json()["faces"]
    assert predicted, "the clear frame has a face"

    _upload(page, frame)
    shown = page.evaluate(SHOWN)
    log.info("screenshot of the page: %s", page.screenshot(artifacts / "ui_sfew_frame.png"))
    assert shown["state"] == "done", (shown, page.console)
    assert len(shown["boxes"]) == len(shown["cards"]) == len(predicted)
    assert shown["cards"][0]["principal"], "the principal face is listed first"
    boxes = {b["number"]: b for b in shown["boxes"]}
    cards = {c["number"]: c for c in shown["cards"]}
    for number, (face, why) in enumerate(zip(predicted, explained, strict=True), start=1):
        drawn, card = boxes[number], cards[number]
        np.testing.assert_allclose(drawn["box"], face["box"], atol=1.5)  # in the upload's pixels
        assert drawn["principal"] == card["principal"] == face["principal"]
        assert card["expression"] == face["expression"]
        assert drawn["tag"].endswith(face["expression"])
        probabilities = face["probabilities"]
        assert card["bars"].keys() == probabilities.keys()
        np.testing.assert_allclose(
            [card["bars"][c] for c in probabilities], list(probabilities.values()), atol=1e-4
        )
        words = why["explanation"]
        for part in (
            "Rule that fired",
            words["rules_fired"]["rule"],
            "Nearest pattern",
            words["nearest_pattern"]["class"],
            "Next most likely",
            words["next_most_likely"]["class"],
        ):
            assert part in card["explanation"], (part, card["explanation"])


def test_page_shows_errors_and_no_face_as_messages(
    page: Chromium, bad_files: dict[str, Path], tmp_path: Path, artifacts: Path
) -> None:
    """A corrupt upload shows the API's error (and nothing of the previous image); an image
    without a face says so."""
    url = _service(page)
    corrupt = bad_files["corrupt"]
    refused = _post(url, "explain", corrupt.read_bytes(), corrupt.name)
    assert refused.status_code == 422 and refused.json()["error"] == "corrupt"

    _upload(page, corrupt)
    message = page.evaluate(MESSAGE)
    page.screenshot(artifacts / "ui_corrupt_upload.png")
    assert message["visible"] and message["kind"] == "error", message
    assert message["state"] == "error" and "422 corrupt" in message["text"], message
    assert refused.json()["detail"] in message["text"], message
    assert message["boxes"] == message["cards"] == 0, "nothing of the previous image stays"

    flat = tmp_path / "flat.png"
    flat.write_bytes(png_bytes(np.full((240, 320, 3), 128, np.uint8)))
    _upload(page, flat)
    message = page.evaluate(MESSAGE)
    assert message["visible"] and message["state"] == "empty", message
    assert "No face" in message["text"], message
    assert requests.get(f"{url}/", timeout=10).status_code == 200, "the OpenAPI page keeps /"


def test_page_draws_where_the_network_looked(
    page: Chromium,
    sfew_root: Path,
    bundle,
    artifacts: Path,
) -> None:
    """/explain's occlusion map of every face is the inference core's (ferops.occlusion through
    the bundle's ONNX model), and the page draws it on the square the network saw (the answer's
    corners, tilted with the face): a GRID × GRID canvas, one cell a pixel, more opaque where
    hiding the cell mattered more."""
    url = _service(page)
    frame = sfew_root / CLEAR_FRAMES[1]
    explained = _post(url, "explain", frame.read_bytes(), frame.name).json()["faces"]
    assert explained, "the clear frame has a face"
    local = Predictor(bundle[0], providers="cpu")
    _, crops = local.locate(read_image(frame))
    batch = local.preprocess(crops)
    expected = occlusion_maps(lambda masked: local.run(masked)[0], batch)
    for face, occlusion in zip(explained, expected, strict=True):
        served = face["explanation"]["occlusion"]
        assert served["grid"] == GRID and np.shape(served["cells"]) == (GRID, GRID)
        np.testing.assert_allclose(served["cells"], occlusion.cells, atol=2e-3)
        assert max(map(max, served["cells"])) == 1.0 or served["max_drop"] == 0.0

    height, width = read_image(frame).shape[:2]
    _upload(page, frame)
    maps = {m["number"]: m for m in page.evaluate(MAPS)}
    page.screenshot(artifacts / "ui_occlusion.png")
    assert len(maps) == len(explained)
    for number, face in enumerate(explained, start=1):
        drawn, cells = maps[number], np.asarray(face["explanation"]["occlusion"]["cells"])
        assert drawn["canvas"], drawn
        assert drawn["grid"] == drawn["width"] == drawn["height"] == GRID
        assert len(drawn["alpha"]) == GRID * GRID  # one pixel a cell, rows from the top
        alpha = np.asarray(drawn["alpha"], float)
        assert alpha.max() > 0 and cells.max() == 1.0, "the map of a random network is not flat"
        # drawn relative to the largest drop, fainter when that drop is small (rounded to bytes)
        np.testing.assert_allclose(alpha / alpha.max(), cells.ravel(), atol=1.0 / alpha.max())
        strength = max(0.25, min(1.0, face["explanation"]["occlusion"]["max_drop"] / 0.1))
        assert abs(alpha.max() - round(170 * strength)) <= 1
        # drawn on the square the network saw (the answer's corners), wherever the page shows it
        corners = np.asarray(face["explanation"]["occlusion"]["corners"]) / (width, height)
        expected = [*corners.min(0), *corners.max(0)]
        np.testing.assert_allclose(drawn["bounds"], expected, atol=0.01)
    cards = page.evaluate(SHOWN)["cards"]
    assert all("Where it looked" in card["explanation"] for card in cards), cards


def test_concurrent_explains_get_their_own_maps(page: Chromium, fer_root: Path) -> None:
    """Under concurrency the classifier batches: requests' GRID² masked copies are packed into
    batches of at most max_batch_size 32, a request that does not fit split by BentoML's batcher
    and mixed with other requests' faces; every answer must still carry its own face's map."""
    from concurrent.futures import ThreadPoolExecutor

    url = _service(page)
    crops = [p.read_bytes() for p in sorted((fer_root / "publictest" / "Fear").iterdir())[:6]]

    def explain(data: bytes) -> list | None:
        answer = _post(url, "explain", data, "crop.png", crop="true")
        faces = answer.json()["faces"] if answer.status_code == 200 else None
        return faces[0]["explanation"]["occlusion"]["cells"] if faces else None

    alone = [explain(data) for data in crops]
    assert any(cells is not None for cells in alone), "YuNet finds faces in FER2013 crops"
    with ThreadPoolExecutor(len(crops)) as pool:
        together = list(pool.map(explain, crops * 2))
    for i, cells in enumerate(together):
        expected = alone[i % len(crops)]
        if expected is None:
            assert cells is None
        else:
            np.testing.assert_allclose(cells, expected, atol=2e-3)
