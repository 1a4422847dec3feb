"""ONNX export (named outputs, symbolic batch, parity), the bundle and the serving core."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ferops.config import load_section
from ferops.data import CLASSES
from ferops.digests import file_digest
from ferops.explanation import softmax
from ferops.export import (
    RANGE_BITS,
    ExportConfig,
    ExportError,
    build_bundle,
    calibration_subset,
    check_dynamic_batch,
    check_int8_parity,
    check_parity,
    export_onnx,
    quantize_int8,
    round_outward,
)
from ferops.images import read_image, to_gray
from ferops.inference import (
    MODEL_FILES,
    BundleError,
    Predictor,
    Preprocess,
    choose_providers,
    cuda_device_count,
    make_session,
)
from ferops.model import FerResNet
from ferops.rules import RuleConfig, fit_tree, patterns
from ferops.training import FaceSet, predict, seed_everything
from tests.bundles import YUNET
from tests.paths import ROOT

SIZE = 32
PARAMS = ROOT / "params.yaml"
META = {
    "classes": list(CLASSES),
    "input_size": SIZE,
    "resize": 36,
    "mean": 127.5,
    "std": 127.5,
    "faces": {"cascade": [{"detector": "yunet"}], "size": 64},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[FerResNet, Path]:
    seed_everything(0)
    model = FerResNet().eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model, SIZE, path)
    return model, path


def test_named_outputs_symbolic_batch_and_parity(exported) -> None:
    model, path = exported
    assert check_dynamic_batch(path)
    assert check_parity(model, path, SIZE, tolerance=1e-4, batches=(1, 3)) < 1e-4


def test_parity_check_fails_on_an_altered_model(exported, tmp_path: Path) -> None:
    model, path = exported
    graph = onnx.load(str(path))
    for init in graph.graph.initializer:
        if "fc" in init.name and "weight" in init.name:
            weights = numpy_helper.to_array(init).copy()
            weights[0, 0] += 0.5
            init.CopyFrom(numpy_helper.from_array(weights, init.name))
            break
    else:
        pytest.fail("no fc weight initializer found to alter")
    altered = tmp_path / "altered.onnx"
    onnx.save(graph, str(altered))
    with pytest.raises(ExportError, match="differ"):
        check_parity(model, altered, SIZE, tolerance=1e-4)


def test_same_weights_export_to_the_same_bytes_from_any_checkout(exported, tmp_path: Path) -> None:
    """The exporter's stack traces held absolute source paths: the same weights exported from
    another checkout gave another sha256 (and a duplicate registered version)."""
    import hashlib
    import shutil
    import subprocess
    import sys

    import ferops
    from ferops.model import save_checkpoint

    model, first = exported
    save_checkpoint(tmp_path / "model.pt", model, META)
    checkout = tmp_path / "elsewhere"
    shutil.copytree(Path(ferops.__file__).parent, checkout / "ferops")
    second = tmp_path / "again.onnx"
    script = (
        "import sys; from pathlib import Path; from ferops.export import export_onnx; "
        "from ferops.model import load_checkpoint; m, meta = load_checkpoint(Path(sys.argv[1])); "
        "export_onnx(m, meta['input_size'], Path(sys.argv[2]))"
    )
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model.pt"), str(second)],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=300,
    )
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (first, second)]
    assert digest[0] == digest[1]
    assert str(checkout).encode() not in second.read_bytes()
    assert check_parity(model, second, SIZE, tolerance=1e-4) < 1e-4


def _rules() -> dict:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(200, 512))
    predicted = rng.integers(0, len(CLASSES), size=200)
    return {
        "classes": list(CLASSES),
        "patterns": patterns(x, predicted, CLASSES),
        "trees": {
            c: fit_tree(x, predicted == i, RuleConfig(max_depth=2)).to_dict()
            for i, c in enumerate(CLASSES)
        },
    }


@pytest.fixture(scope="module")
def bundle(exported, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, path = exported
    folder = tmp_path_factory.mktemp("bundle")
    (folder / "rules_src.json").write_text(json.dumps(_rules()))
    build_bundle(folder / "bundle", path, META, folder / "rules_src.json", YUNET)
    return folder / "bundle"


def test_predictor_detects_classifies_and_explains_a_real_frame(
    bundle: Path, clear_frame: Path
) -> None:
    predictor = Predictor(bundle)
    assert predictor.providers[0] in ("CPUExecutionProvider", "CUDAExecutionProvider")
    faces = predictor.analyse(read_image(clear_frame), explain=True)
    assert faces and sum(f["principal"] for f in faces) == 1
    for face in faces:
        assert set(face["probabilities"]) == set(CLASSES)
        assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert face["expression"] == max(face["probabilities"], key=face["probabilities"].get)
        assert {"nearest_pattern", "important_inputs", "rules_fired", "next_most_likely"} <= set(
            face["explanation"]
        )


def _input_from_corners(rgb: np.ndarray, corners: list[list[float]], size: int) -> np.ndarray:
    """The ``size`` square the corners span, cut from ``rgb`` (gray) by an affine warp."""
    src = np.asarray(corners[:3], np.float32) - 0.5  # pixel edges → pixel centres
    dst = np.array([[0, 0], [size, 0], [size, size]], np.float32) - 0.5
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return cv2.warpAffine(
        gray,
        cv2.getAffineTransform(src, dst),
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


@pytest.mark.parametrize("max_side", [1600, 480])  # 480: faces found on a shrunk copy
def test_corners_place_the_network_input_in_the_image(
    bundle: Path, clear_frame: Path, fer_root: Path, max_side: int
) -> None:
    """A face record's corners are where the network's input lies in the uploaded image: cut
    there, the image gives the network's input again — for an upright and a tilted frame and a
    face crop (crop=true) — so the occlusion map drawn in them covers what the network saw.
    (How far the square turns with a tilted head is YuNet's landmarks' business: on this
    frame turned 25° they turn ~6°.)"""
    predictor = Predictor(bundle, max_side=max_side)
    frame = read_image(clear_frame)
    height, width = frame.shape[:2]
    tilt = cv2.getRotationMatrix2D((width / 2, height / 2), 25, 1.0)
    tilted = cv2.warpAffine(frame, tilt, (width, height), borderMode=cv2.BORDER_REPLICATE)
    crop = read_image(min((fer_root / "publictest/Happy").iterdir()))
    crop = cv2.resize(crop, None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC)  # 384 px
    spec = predictor.preprocess
    for rgb, is_crop in ((frame, False), (tilted, False), (crop, True)):
        records, chips = predictor.locate(rgb, is_crop)
        assert records, "a face is found"
        inputs = spec(chips) * spec.std + spec.mean
        for record, seen in zip(records, inputs[:, 0], strict=True):
            corners = np.asarray(record["corners"])
            assert corners.shape == (4, 2)
            cut = _input_from_corners(rgb, record["corners"], spec.input_size)
            assert np.corrcoef(cut.ravel(), seen.ravel())[0, 1] > 0.97
            assert np.abs(cut - seen).mean() < 8  # gray levels
            sides = np.linalg.norm(np.roll(corners, -1, axis=0) - corners, axis=1)
            np.testing.assert_allclose(sides, sides[0], rtol=0.01)  # a square


def test_bundle_and_torch_agree_on_real_faces(bundle: Path, exported, fer_root: Path) -> None:
    model, _ = exported
    crops = [to_gray(read_image(p)) for p in sorted((fer_root / "publictest/Happy").iterdir())[:8]]
    torch_logits, _ = predict(model, FaceSet(crops, [3] * 8, META["resize"]), SIZE, device="cpu")
    onnx_logits, _ = Predictor(bundle).classify(crops)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)
    np.testing.assert_allclose(softmax(onnx_logits).sum(1), 1, atol=1e-6)


def test_serving_preprocess_equals_training_eval_path() -> None:
    rng = np.random.default_rng(3)
    crops = [
        rng.integers(0, 256, (256, 256), dtype=np.uint8),
        rng.integers(0, 256, (294, 256), dtype=np.uint8),
    ]
    ours = Preprocess(SIZE, 36, 127.5, 127.5)(crops)
    theirs, _ = FaceSet(crops, [0, 0], 36).batch(np.arange(2), SIZE, None)
    np.testing.assert_array_equal(ours, theirs.numpy())


def test_tampered_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / "labels.json").write_text(json.dumps(list(reversed(CLASSES))))
    with pytest.raises(BundleError, match="sha256"):
        Predictor(copy)


def test_providers_follow_the_real_hardware() -> None:
    if cuda_device_count() == 0:
        assert choose_providers("auto") == ["CPUExecutionProvider"]
        with pytest.raises(RuntimeError, match="CUDA"):
            choose_providers("cuda")
    else:
        assert choose_providers("auto")[0] == "CUDAExecutionProvider"
    assert choose_providers("cpu") == ["CPUExecutionProvider"]


# --- int8 -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibration(fer_root: Path) -> np.ndarray:
    """Preprocessed real FER2013 *train* faces (calibration never sees test faces)."""
    paths = [p for c in ("Happy", "Sad") for p in sorted((fer_root / "train" / c).iterdir())[:24]]
    crops = [to_gray(read_image(p)) for p in paths]
    return Preprocess(SIZE, META["resize"], META["mean"], META["std"])(crops)


@pytest.fixture(scope="module")
def quantized(exported, calibration: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, path = exported
    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    summary = quantize_int8(path, out, calibration)
    assert summary["calibration_faces"] == len(calibration) and summary["calibrated_tensors"] > 0
    return out


def test_int8_model_is_smaller_and_close_to_fp32(exported, quantized: Path, calibration) -> None:
    _, path = exported
    assert quantized.stat().st_size < path.stat().st_size / 3  # int8 weights
    ops = {node.op_type for node in onnx.load(str(quantized)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    fp32 = make_session(path, "cpu").run(["logits"], {"input": calibration})[0]
    int8 = make_session(quantized, "cpu").run(["logits", "features"], {"input": calibration})
    assert int8[0].shape == fp32.shape and int8[1].shape == (len(calibration), 512)
    assert np.abs(int8[0] - fp32).max() < 0.1 * np.abs(fp32).max()


def test_int8_bytes_are_deterministic_even_when_float_noise_moves_the_ranges(
    exported, quantized: Path, calibration: np.ndarray, tmp_path: Path
) -> None:
    """Same weights + chips → same sha256; and the last-bit differences another CPU's fp32
    kernels would make in the computed activations (simulated: chips scaled by 1 − 1e-6, which
    keeps the input's own exact ±1 range on its rounding grid) do not change the bytes."""
    _, path = exported
    again, nudged = tmp_path / "again.onnx", tmp_path / "nudged.onnx"
    quantize_int8(path, again, calibration)
    quantize_int8(path, nudged, calibration * np.float32(1 - 1e-6))
    digest = {file_digest(p) for p in (quantized, again, nudged)}
    assert len(digest) == 1


def test_round_outward_widens_ranges_by_at_most_one_step() -> None:
    values = np.array([-6.516117, -1e-3, 0.0, 1e-3, 8.091679, 12.356201], dtype=np.float32)
    up, down = round_outward(values, up=True), round_outward(values, up=False)
    assert np.all(up >= values) and np.all(down <= values)
    assert up[2] == 0 and down[2] == 0
    step = np.abs(values) / 2**RANGE_BITS * 2  # one step of RANGE_BITS significant bits
    assert np.all(up - values <= step) and np.all(values - down <= step)
    assert np.array_equal(round_outward(up, up=True), up)  # already on the grid: unchanged


def test_manifest_selects_the_precision_params_ask_for(
    exported, quantized: Path, calibration: np.ndarray, tmp_path: Path
) -> None:
    _, path = exported
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(_rules()))
    for precision in ("int8", "fp32"):
        config = ExportConfig.from_section({"precision": precision})
        folder = tmp_path / precision
        manifest = build_bundle(
            folder, path, META, rules, YUNET, int8_path=quantized, precision=config.precision
        )
        assert manifest["precision"] == precision
        assert set(MODEL_FILES.values()) <= set(manifest["files"])
        served = Predictor(folder, providers="cpu")
        assert served.precision == precision
        expected = make_session(folder / MODEL_FILES[precision], "cpu")
        logits, _ = served.run(calibration[:4])
        np.testing.assert_array_equal(logits, expected.run(None, {"input": calibration[:4]})[0])
        assert Predictor(folder, providers="cpu", precision="fp32").precision == "fp32"
    fp32_only = tmp_path / "fp32_only"
    build_bundle(fp32_only, path, META, rules, YUNET)
    with pytest.raises(BundleError, match="no int8 model"):
        Predictor(fp32_only, providers="cpu", precision="int8")
    with pytest.raises(ValueError, match="int8_path"):
        build_bundle(tmp_path / "bad", path, META, rules, YUNET, precision="int8")


def test_export_params_are_validated() -> None:
    shipped = ExportConfig.from_section(load_section(PARAMS, "export"))
    assert shipped.precision in MODEL_FILES
    with pytest.raises(ValueError, match="precision"):
        ExportConfig.from_section({"precision": "fp16"})
    with pytest.raises(ValueError, match="unknown ExportConfig settings"):
        ExportConfig.from_section({"precison": "int8"})
    with pytest.raises(ValueError, match="calibration_faces"):
        ExportConfig.from_section({"calibration_faces": 0})
    assert list(calibration_subset(10, 4)) == [0, 3, 6, 9]
    assert list(calibration_subset(3, 512)) == [0, 1, 2]


def test_int8_parity_fails_closed_when_int8_serves(exported, quantized, calibration) -> None:
    _, path = exported
    fp32 = make_session(path, "cpu").run(["logits"], {"input": calibration})[0]
    int8 = make_session(quantized, "cpu").run(["logits"], {"input": calibration})[0]
    truth = fp32.argmax(1)  # fp32 right on every face
    # random weights leave tiny margins: int8 flips a few of them, so the bounds are loose here
    serving = ExportConfig(precision="int8", int8_max_accuracy_drop=0.2, int8_min_agreement=0.8)
    report = check_int8_parity(fp32, int8, truth, serving)
    assert report["passed"] and report["agreement"] >= 0.9
    worse = fp32.copy()
    worse[: len(worse) // 4] = np.roll(fp32[: len(worse) // 4], 1, axis=1)  # a quarter flipped
    worse[: len(worse) // 4, fp32[: len(worse) // 4].argmax(1)] = -1e3
    with pytest.raises(ExportError, match="int8_max_accuracy_drop.*int8_min_agreement"):
        check_int8_parity(fp32, worse, truth, serving)
    with pytest.raises(ExportError, match="int8"):  # NaN logits never pass
        check_int8_parity(fp32, np.full_like(fp32, np.nan), truth, serving)
    report = check_int8_parity(fp32, worse, truth, ExportConfig(precision="fp32"))
    assert not report["passed"]  # not served: reported, the stage goes on
