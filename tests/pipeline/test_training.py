"""Training on a few real FER2013 faces: deterministic on CPU, learns, checkpoints round-trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ferops.data import CLASSES
from ferops.images import read_image, to_gray
from ferops.model import FEATURES, FerResNet, LogitsAndFeatures, load_checkpoint, save_checkpoint
from ferops.training import FaceSet, TrainConfig, distillation_loss, fit, predict, seed_everything

TINY = TrainConfig(epochs=2, batch_size=16, lr=0.01, input_size=32, resize=36, device="cpu")


@pytest.fixture(scope="module")
def faces(fer_root: Path) -> FaceSet:
    images, labels = [], []
    for index, label in enumerate(CLASSES):
        for path in sorted((fer_root / "train" / label).iterdir())[:6]:
            images.append(to_gray(read_image(path)))
            labels.append(index)
    return FaceSet(images, labels, TINY.resize)


def test_model_shapes() -> None:
    model = FerResNet().eval()
    x = torch.zeros(3, 1, 64, 64)
    logits, feats = LogitsAndFeatures(model)(x)
    assert logits.shape == (3, len(CLASSES)) and feats.shape == (3, FEATURES)
    assert torch.allclose(model(x), logits)


def _seeded_model(seed: int = 0) -> FerResNet:
    seed_everything(seed)
    return FerResNet()


def test_same_seed_same_metrics_on_cpu(faces: FaceSet) -> None:
    _, first = fit(_seeded_model(), faces, faces, TINY)
    _, second = fit(_seeded_model(), faces, faces, TINY)
    drop = ("seconds",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in first] == [
        {k: v for k, v in h.items() if k not in drop} for h in second
    ]
    assert len(first) == 2 and 0 <= first[-1]["val_acc"] <= 1


def test_gradient_accumulation_matches_the_big_batch_closely(faces: FaceSet) -> None:
    _, whole = fit(_seeded_model(), faces, None, TrainConfig(**{**TINY.to_dict(), "epochs": 1}))
    _, parts = fit(
        _seeded_model(),
        faces,
        None,
        TrainConfig(**{**TINY.to_dict(), "epochs": 1, "micro_batch": 4}),
    )
    # BatchNorm sees smaller batches, so equal only approximately, but the same data and steps.
    assert parts[0]["train_loss"] == pytest.approx(whole[0]["train_loss"], rel=0.25)


def test_learns_a_tiny_set(faces: FaceSet) -> None:
    config = TrainConfig(**{**TINY.to_dict(), "epochs": 12, "lr": 0.02})
    _model, history = fit(FerResNet(), faces, None, config)
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_checkpoint_round_trip(tmp_path: Path, faces: FaceSet) -> None:
    model = FerResNet().eval()
    save_checkpoint(tmp_path / "m.pt", model, {"classes": list(CLASSES), "input_size": 32})
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    a, fa = predict(model, faces, 32, device="cpu")
    b, fb = predict(loaded, faces, 32, device="cpu")
    assert meta["input_size"] == 32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fa, fb)


def _one_epoch(**changes: object) -> TrainConfig:
    return TrainConfig(**{**TINY.to_dict(), "epochs": 1, **changes})


def test_frozen_blocks_keep_weights_and_batchnorm_statistics(faces: FaceSet) -> None:
    model = _seeded_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model, _ = fit(model, faces, None, _one_epoch(freeze_blocks=2))
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith(("net.conv1.", "net.bn1.", "net.layer1.")):
            assert torch.equal(value, after[key]), key
    assert not torch.equal(before["net.layer2.0.conv1.weight"], after["net.layer2.0.conv1.weight"])
    assert not torch.equal(before["net.fc.weight"], after["net.fc.weight"])
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again for the caller


def test_backbone_lr_scale_zero_trains_only_the_classifier(faces: FaceSet) -> None:
    model = _seeded_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model, _ = fit(model, faces, None, _one_epoch(backbone_lr_scale=0.0))
    after = model.state_dict()
    assert torch.equal(before["net.layer4.1.conv2.weight"], after["net.layer4.1.conv2.weight"])
    assert not torch.equal(before["net.fc.weight"], after["net.fc.weight"])


def test_sparse_head_reads_only_its_features_and_the_backbone_adapts(faces: FaceSet) -> None:
    """head_features: each class's logit keeps the starting classifier's k largest |weights|,
    the rest are 0 after training too; the kept weights and the backbone still learn."""
    model = _seeded_model()
    start = model.net.fc.weight.detach().clone()
    before = model.net.layer4[1].conv2.weight.detach().clone()
    model, _ = fit(model, faces, None, _one_epoch(head_features=3))
    weight = model.net.fc.weight.detach()
    assert ((weight != 0).sum(1) == 3).all()
    kept = start.abs().topk(3, dim=1).indices
    assert torch.equal(weight.abs().topk(3, dim=1).indices.sort(1).values, kept.sort(1).values)
    assert not torch.equal(weight.gather(1, kept), start.gather(1, kept))
    assert not torch.equal(before, model.net.layer4[1].conv2.weight)
    assert all(not p._backward_hooks for p in model.parameters()), "the gradient mask is removed"


def test_mixup_and_dropout_train_deterministically(faces: FaceSet) -> None:
    config = _one_epoch(mixup_alpha=0.4, dropout=0.5)
    first_model, first = fit(_seeded_model(), faces, faces, config)
    _, second = fit(_seeded_model(), faces, faces, config)
    assert first[0]["train_loss"] == second[0]["train_loss"]
    assert first[0]["val_acc"] == second[0]["val_acc"]
    assert first_model.dropout.p == 0.0  # predictions after training never drop features


@pytest.mark.parametrize(
    "bad",
    [
        {"freeze_blocks": 6},
        {"freeze_blocks": -1},
        {"dropout": 1.0},
        {"mixup_alpha": -0.1},
        {"backbone_lr_scale": -1.0},
        {"head_features": -1},
        {"head_features": 513},
    ],
)
def test_invalid_fine_tuning_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**{**TINY.to_dict(), **bad})


def test_run_fold_refuses_overlapping_or_empty_masks() -> None:
    from ferops.augment import AugmentConfig
    from ferops.crossval import run_fold

    faces = [np.full((72, 72), i, dtype=np.uint8) for i in range(4)]
    config = TrainConfig(epochs=1, batch_size=2, input_size=64, resize=72)
    aug = AugmentConfig(ops=("original",), factor=1.1)
    train = np.array([True, True, True, False])
    with pytest.raises(ValueError, match="both trained on and held out"):
        run_fold(
            faces,
            [0, 1, 2, 3],
            train,
            np.array([False, False, True, True]),
            config,
            aug,
            None,
            seed=0,
        )
    with pytest.raises(ValueError, match="at least one"):
        run_fold(faces, [0, 1, 2, 3], train, np.zeros(4, dtype=bool), config, aug, None, seed=0)


def test_distillation_loss_matches_a_hand_computed_value() -> None:
    # T = 1: student softmax [1/3, 2/3], teacher softmax [3/4, 1/4]
    # KL = 3/4·ln((3/4)/(1/3)) + 1/4·ln((1/4)/(2/3)) = 0.75·ln 2.25 + 0.25·ln 0.375 = 0.362990
    student = torch.tensor([[0.0, math.log(2)]])
    teacher = torch.tensor([[math.log(3), 0.0]])
    assert float(distillation_loss(student, teacher, 1.0)) == pytest.approx(0.362990, abs=1e-6)
    # T = 2 on logits twice as large: the same distributions, the loss times T² = 4
    assert float(distillation_loss(2 * student, 2 * teacher, 2.0)) == pytest.approx(
        4 * 0.362990, abs=1e-5
    )
    assert float(distillation_loss(teacher, teacher, 3.0)) == pytest.approx(0.0, abs=1e-6)


def test_fit_mixes_a_second_set_into_batches_and_distils() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20, 20), dtype=np.uint8) for _ in range(12)]
    soft = rng.normal(size=(12, 7)).astype(np.float32)
    sfew = FaceSet(images, [i % 7 for i in range(12)], 18, soft)
    extra = FaceSet(images[:6], [0] * 6, 18, soft[:6])
    config = TrainConfig(
        epochs=1,
        batch_size=4,
        input_size=16,
        resize=18,
        distill_weight=0.5,
        extra_share=0.5,
        device="cpu",
    )
    _, history = fit(FerResNet(), sfew, None, config, extra=extra)
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])
    with pytest.raises(ValueError, match="no extra data set"):
        fit(FerResNet(), sfew, None, config)
    with pytest.raises(ValueError, match="no teacher soft labels"):
        fit(FerResNet(), FaceSet(images, [0] * 12, 18), None, config, extra=extra)


def test_chunks_cover_the_batch_and_never_leave_one_face_alone() -> None:
    from ferops.training import chunks

    assert chunks(64, 32) == [slice(0, 32), slice(32, 64)]
    assert chunks(55, 32) == [slice(0, 32), slice(32, 55)]
    assert chunks(33, 32) == [slice(0, 33)]  # a lone 33rd face joins the first chunk
    assert chunks(1, 32) == [slice(0, 1)] and chunks(0, 32) == []
