"""The picture of the web page in docs/serving.md: a face drawn by code (no data-set image
may be committed), uploaded to a running service's ``/ui/`` in headless Chromium (the browser
test's driver).

    ferops-models import-bento && bentoml serve &        # the champion, http://127.0.0.1:3000
    PYTHONPATH=. python scripts/readme_screenshot.py --url http://127.0.0.1:3000 --out docs/ui.png
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ferops.api import UI_ROUTE
from tests.service.browser import Chromium

log = logging.getLogger("readme_screenshot")


def draw_face(width: int = 640, height: int = 480) -> np.ndarray:
    """A smiling cartoon face (BGR) that YuNet finds (score ≈ 0.91): hair, ears, eyes with brows,
    nose, open smile, blurred so its edges look photographic."""
    img = np.full((height, width, 3), (200, 205, 210), np.uint8)
    cx, cy = width // 2, height // 2 + 10
    cv2.ellipse(img, (cx, cy - 20), (105, 120), 0, 180, 360, (30, 40, 60), -1)
    cv2.ellipse(img, (cx, cy), (90, 120), 0, 0, 360, (140, 170, 215), -1)
    for side in (-1, 1):
        cv2.ellipse(img, (cx + side * 95, cy), (12, 25), 0, 0, 360, (130, 160, 205), -1)
        eye = (cx + side * 36, cy - 25)
        cv2.ellipse(img, eye, (17, 9), 0, 0, 360, (245, 245, 245), -1)
        cv2.circle(img, eye, 7, (50, 35, 25), -1)
        cv2.line(img, (eye[0] - 20, eye[1] - 20), (eye[0] + 18, eye[1] - 22), (40, 45, 60), 5)
    nose = np.array([[cx, cy - 15], [cx - 12, cy + 25], [cx + 12, cy + 25]])
    cv2.fillPoly(img, [nose], (120, 150, 200))
    cv2.ellipse(img, (cx, cy + 55), (35, 18), 0, 0, 180, (40, 30, 120), -1)
    cv2.ellipse(img, (cx, cy + 55), (30, 6), 0, 0, 180, (250, 250, 250), -1)
    return cv2.GaussianBlur(img, (0, 0), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--out", type=Path, default=Path("docs/ui.png"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        face = Path(tmp) / "drawn_face.png"
        cv2.imwrite(str(face), draw_face())
        with Chromium(Path(tmp) / "profile", width=1280, height=800) as page:
            page.open(f"{args.url}{UI_ROUTE}")
            page.choose_files("#file", [face])
            page.wait_for(
                "['done', 'empty', 'error']"
                ".includes(document.getElementById('app').dataset.state)",
                timeout=120,
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(args.out)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
