"""ONNX export (named outputs, symbolic batch, parity), the bundle and the serving core."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ferops.data import CLASSES
from ferops.explanation import softmax
from ferops.export import ExportError, build_bundle, check_dynamic_batch, check_parity, export_onnx
from ferops.images import read_image, to_gray
from ferops.inference import (
    BundleError,
    Predictor,
    Preprocess,
    choose_providers,
    cuda_device_count,
)
from ferops.model import FerResNet
from ferops.rules import RuleConfig, fit_tree, patterns
from ferops.training import FaceSet, predict, seed_everything
from tests.bundles import YUNET

SIZE = 32
META = {"classes": list(CLASSES), "input_size": SIZE, "resize": 36, "mean": 127.5, "std": 127.5,
        "faces": {"cascade": [{"detector": "yunet"}], "size": 64}}  # fmt: skip


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
    script = ("import sys; from pathlib import Path; from ferops.export import export_onnx; "
              "from ferops.model import load_checkpoint; m, meta = load_checkpoint(Path(sys.argv[1])); "
              "export_onnx(m, meta['input_size'], Path(sys.argv[2]))")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "model.pt"), str(second)],
                   env=env, cwd=tmp_path, check=True, timeout=300)  # fmt: skip
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (first, second)]
    assert digest[0] == digest[1]
    assert str(checkout).encode() not in second.read_bytes()
    assert check_parity(model, second, SIZE, tolerance=1e-4) < 1e-4


@pytest.fixture(scope="module")
def bundle(exported, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, path = exported
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(200, 512))
    predicted = rng.integers(0, len(CLASSES), size=200)
    rules = {"classes": list(CLASSES), "patterns": patterns(x, predicted, CLASSES),
             "trees": {c: fit_tree(x, predicted == i, RuleConfig(max_depth=2)).to_dict()
                       for i, c in enumerate(CLASSES)}}  # fmt: skip
    folder = tmp_path_factory.mktemp("bundle")
    (folder / "rules_src.json").write_text(json.dumps(rules))
    build_bundle(folder / "bundle", path, META, folder / "rules_src.json", YUNET)
    return folder / "bundle"


def test_predictor_detects_classifies_and_explains_a_real_frame(bundle: Path, clear_frame: Path) -> None:
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


def test_bundle_and_torch_agree_on_real_faces(bundle: Path, exported, fer_root: Path) -> None:
    model, _ = exported
    crops = [to_gray(read_image(p)) for p in sorted((fer_root / "publictest/Happy").iterdir())[:8]]
    torch_logits, _ = predict(model, FaceSet(crops, [3] * 8, META["resize"]), SIZE, device="cpu")
    onnx_logits, _ = Predictor(bundle).classify(crops)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)
    np.testing.assert_allclose(softmax(onnx_logits).sum(1), 1, atol=1e-6)


def test_serving_preprocess_equals_training_eval_path() -> None:
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (256, 256), dtype=np.uint8),
             rng.integers(0, 256, (294, 256), dtype=np.uint8)]  # fmt: skip
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
