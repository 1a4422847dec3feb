"""The teacher: OpenCV-zoo's RAF-DB expression model (MobileFaceNet, int8 ONNX) on our face chips.

Its soft labels are what ``pretrain`` and ``train`` can distil from (:func:`distillation_loss` in
:mod:`ferops.training`). The teacher expects a 112×112 RGB face whose 5 landmarks sit on its own
template (:data:`TEACHER_TEMPLATE`), ``(x / 255 − 0.5) / 0.5``. A chip of :mod:`ferops.faces` has
its landmarks on :data:`ferops.faces.TEMPLATE` by construction, so one similarity warp of the chip
gives the teacher's input: the teacher sees exactly the faces the student sees (gray, as ours).
Its 7 outputs are logits in our class order (angry, disgust, fearful, happy, neutral, sad,
surprised).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ferops.faces import similarity, template_points, verify_sha256

log = logging.getLogger(__name__)

#: The teacher's file in the ``zoo`` data and its sha256 (``data/raw/zoo/LICENSES.md``).
TEACHER_FILE = "facial_expression_recognition_mobilefacenet_2022july_int8.onnx"
TEACHER_SHA256 = "f0d7093aff10e2638c734c5f18a6a7eabd2b9239b20bdb9b8090865a6f69a1ed"
TEACHER_SIZE = 112
#: The 5-landmark template of the teacher's 112-px input (OpenCV zoo's
#: ``facial_expression_recognition`` demo), in :data:`ferops.faces.TEMPLATE`'s order.
TEACHER_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    np.float64,
)


def teacher_input(chips: Sequence[np.ndarray], margin: float) -> np.ndarray:
    """Gray square chips (landmarks on the template with ``margin``) → N×3×112×112 float32."""
    out = np.empty((len(chips), 3, TEACHER_SIZE, TEACHER_SIZE), np.float32)
    for i, chip in enumerate(chips):
        matrix = similarity(template_points(chip.shape[0], margin), TEACHER_TEMPLATE)
        face = cv2.warpAffine(
            chip,
            matrix,
            (TEACHER_SIZE, TEACHER_SIZE),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        out[i] = (face.astype(np.float32) / 255.0 - 0.5) / 0.5
    return out


class Teacher:
    """The zoo model on ONNX Runtime's CPU provider (its graph takes one face at a time)."""

    def __init__(self, model: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        if not Path(model).is_file():
            raise FileNotFoundError(f"teacher model {model} is missing ({TEACHER_FILE})")
        verify_sha256(Path(model), TEACHER_SHA256)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name

    def logits(
        self, chips: Sequence[np.ndarray], margin: float, desc: str = "teach"
    ) -> np.ndarray:
        """N×7 teacher logits of gray chips."""
        out = np.empty((len(chips), 7), np.float32)
        for i in tqdm(range(len(chips)), desc=desc, unit="face", mininterval=5):
            x = teacher_input([chips[i]], margin)
            out[i] = self.session.run(None, {self.input: x})[0][0]
        return out
