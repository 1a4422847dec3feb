"""Training and batch prediction for :class:`~ferops.model.FerResNet` on in-memory gray faces."""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ferops.augment import random_square_crop
from ferops.ferplus import TARGETS
from ferops.model import FEATURES, FerResNet, resolve_device
from ferops.sections import SectionConfig

log = logging.getLogger(__name__)

SCHEDULES = ("none", "cosine", "step")
INITS = ("scratch", "fer2013")
#: Backbone blocks of :class:`~ferops.model.FerResNet` in forward order (``freeze_blocks``).
BLOCKS: tuple[tuple[str, ...], ...] = (
    ("conv1", "bn1"),
    ("layer1",),
    ("layer2",),
    ("layer3",),
    ("layer4",),
)
#: Pixel normalisation: uint8 → [-1, 1]. Saved with every checkpoint and in the serving bundle.
MEAN, STD = 127.5, 127.5


@dataclass(frozen=True)
class TrainConfig(SectionConfig):
    """Optimisation settings shared by ``pretrain``, ``train`` and ``crossval``."""

    epochs: int = 30
    batch_size: int = 256  # effective batch (the paper's 256)
    micro_batch: int = 0  # >0: accumulate gradients over chunks of this size
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: int = 0
    input_size: int = 224  # the random square crop (paper: 224)
    resize: int = 256  # short side before cropping
    online_flip: bool = False
    label_smoothing: float = 0.0
    seed: int = 42
    device: str = "auto"
    #: Leading blocks kept fixed (weights and BatchNorm statistics): 0 = none, 1 = the stem
    #: (conv1 + bn1), 2 = stem + layer1, … 5 = every block but the classifier.
    freeze_blocks: int = 0
    #: Learning-rate multiplier of the trainable backbone (everything but the classifier ``fc``);
    #: 0 leaves its weights out of the optimiser (BatchNorm statistics still adapt).
    backbone_lr_scale: float = 1.0
    #: Mixup: Beta(alpha, alpha) mixing weight of image pairs within a batch; 0 = off.
    mixup_alpha: float = 0.0
    #: Dropout probability on the 512 pooled features before the classifier (training only).
    dropout: float = 0.0
    #: Distillation: weight of the teacher's soft labels in the loss (0 = ground truth only) and
    #: the temperature both distributions are softened with (:func:`distillation_loss`).
    distill_weight: float = 0.0
    distill_temperature: float = 2.0
    #: Share of every batch drawn from a second data set (FER2013 train while fine-tuning on
    #: SFEW), so fine-tuning does not erase what pre-training learnt; 0 = off.
    extra_share: float = 0.0
    #: What FER2013 faces learn: their ``folder`` label, or the ``ferplus`` vote distribution
    #: (:mod:`ferops.ferplus`; faces without usable votes are left out).
    fer2013_targets: str = "folder"
    #: Sparse classifier: each class's logit reads only this many of the pooled features (those
    #: with the largest |weight| for that class in the starting classifier; the others' weights
    #: are set to 0 and get no gradient), the backbone adapting to it while it trains; 0 = all
    #: (dense). Depth-limited rule trees can follow a decision that reads few features (issue 15).
    head_features: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.freeze_blocks <= len(BLOCKS):
            raise ValueError(
                f"freeze_blocks must lie in 0..{len(BLOCKS)}, got {self.freeze_blocks}"
            )
        if self.backbone_lr_scale < 0 or self.mixup_alpha < 0 or not 0 <= self.dropout < 1:
            raise ValueError("backbone_lr_scale and mixup_alpha must be >= 0, dropout in [0, 1)")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} is not one of {SCHEDULES}")
        if self.resize < self.input_size:
            raise ValueError(f"resize ({self.resize}) must be >= input_size ({self.input_size})")
        if self.epochs < 1 or self.batch_size < 1 or self.micro_batch < 0:
            raise ValueError("epochs and batch_size must be >= 1, micro_batch >= 0")
        if not 0 <= self.distill_weight <= 1 or self.distill_temperature <= 0:
            raise ValueError("distill_weight must lie in [0, 1] and distill_temperature be > 0")
        if not 0 <= self.extra_share < 1:
            raise ValueError(f"extra_share must lie in [0, 1), got {self.extra_share}")
        if not 0 <= self.head_features <= FEATURES:
            raise ValueError(f"head_features must lie in 0..{FEATURES}, got {self.head_features}")
        if self.mixup_alpha > 0 and self.distill_weight > 0:
            raise ValueError("mixup and distillation cannot be combined")
        if self.fer2013_targets not in TARGETS:
            raise ValueError(f"fer2013_targets {self.fer2013_targets!r} is not one of {TARGETS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PretrainConfig(SectionConfig):
    """The ``pretrain`` section of params.yaml: a :class:`TrainConfig` (its keys, flat) and how
    many FER2013 faces to use (0 = all)."""

    train: TrainConfig
    max_train: int = 0
    max_val: int = 0

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> PretrainConfig:
        values = dict(section or {})
        limits = {k: int(values.pop(k)) for k in ("max_train", "max_val") if k in values}
        return cls(train=TrainConfig.from_section(values), **limits)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; deterministic kernels where torch has them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def resize_short_side(image: np.ndarray, side: int) -> np.ndarray:
    """Resize so the shorter side equals ``side``, keeping the aspect ratio."""
    height, width = image.shape[:2]
    scale = side / min(height, width)
    if scale == 1:
        return image
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp)


def centre_square(image: np.ndarray, side: int) -> np.ndarray:
    """The centred ``side×side`` window (evaluation's counterpart of the random crop)."""
    height, width = image.shape[:2]
    y0, x0 = (height - side) // 2, (width - side) // 2
    return image[y0 : y0 + side, x0 : x0 + side]


class FaceSet:
    """Gray uint8 faces (any sizes) with labels, pre-resized once to the training scale;
    optionally the teacher's logits for each face (``soft``, N×7) to distil from, and target
    distributions (``targets``, N×7, e.g. FER+ votes) that the loss learns instead of the
    one-hot labels (the labels then only count accuracy)."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[int],
        resize: int,
        soft: np.ndarray | None = None,
        targets: np.ndarray | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if not len(images):
            raise ValueError("a data set needs at least one image")
        for name, extra in (("soft labels", soft), ("targets", targets)):
            if extra is not None and np.shape(extra) != (len(labels), 7):
                raise ValueError(f"{name} must be {len(labels)}×7, got {np.shape(extra)}")
        self.images = [resize_short_side(np.asarray(i, dtype=np.uint8), resize) for i in images]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.soft = None if soft is None else np.asarray(soft, dtype=np.float32)
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32)

    def target_rows(self, indices: np.ndarray, label_smoothing: float) -> torch.Tensor:
        """N×7 distributions the loss learns for ``indices``: the given targets, else the
        labels one-hot, smoothed by ``label_smoothing`` (as ``nn.CrossEntropyLoss`` does)."""
        if self.targets is not None:
            return torch.from_numpy(self.targets[indices])
        one_hot = np.eye(7, dtype=np.float32)[self.labels[indices]]
        return torch.from_numpy(one_hot * (1 - label_smoothing) + label_smoothing / 7)

    def __len__(self) -> int:
        return len(self.images)

    def batch(
        self, indices: np.ndarray, side: int, rng: np.random.Generator | None, flip: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tensors for ``indices``: random crops (and flips) when ``rng`` is given, else centre."""
        crops = []
        for i in indices:
            image = self.images[i]
            if rng is None:
                crop = centre_square(image, side)
            else:
                crop = random_square_crop(image, side, rng)
                if flip and rng.random() < 0.5:
                    crop = crop[:, ::-1]
            crops.append(crop)
        return to_tensor(np.stack(crops)), torch.from_numpy(self.labels[indices])


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton et al. (2015): ``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, mean over the
    batch (the T² keeps its gradients on the scale of the cross-entropy's)."""
    target = torch.softmax(teacher / temperature, dim=1)
    log_student = torch.log_softmax(student / temperature, dim=1)
    kl = (target * (torch.log(target.clamp_min(1e-12)) - log_student)).sum(1)
    return kl.mean() * temperature**2


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against target distributions, mean over the batch:
    ``−Σ_c t_c · log softmax(z)_c``; for one-hot targets the ordinary cross-entropy, for
    smoothed one-hot targets ``nn.CrossEntropyLoss(label_smoothing=…)``'s."""
    return -(targets * torch.log_softmax(logits, dim=1)).sum(1).mean()


def to_tensor(gray: np.ndarray) -> torch.Tensor:
    """N×H×W uint8 → N×1×H×W float, normalised with :data:`MEAN`/:data:`STD`."""
    x = torch.from_numpy(np.ascontiguousarray(gray)).float().unsqueeze(1)
    return (x - MEAN) / STD


def _lr_factor(config: TrainConfig, epoch: int) -> float:
    if epoch < config.warmup_epochs:
        return (epoch + 1) / (config.warmup_epochs + 1)
    if config.schedule == "cosine":
        span = max(config.epochs - config.warmup_epochs, 1)
        return 0.5 * (1 + math.cos(math.pi * (epoch - config.warmup_epochs) / span))
    if config.schedule == "step":
        return 0.1 ** (epoch // max(config.epochs // 3, 1))
    return 1.0


@torch.no_grad()
def predict(
    model: FerResNet,
    data: FaceSet,
    side: int,
    batch_size: int = 64,
    device: str = "auto",
    flip_tta: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits N×7, features N×512) on centre crops, in order; with ``flip_tta`` the mean of the
    crop's and its mirror image's."""
    dev = resolve_device(device)
    model = model.to(dev).eval()
    logits, feats = [], []
    for start in range(0, len(data), batch_size):
        x, _ = data.batch(np.arange(start, min(start + batch_size, len(data))), side, None)
        out, feat = model.forward_features(x.to(dev))
        if flip_tta:
            out_f, feat_f = model.forward_features(torch.flip(x, dims=[3]).to(dev))
            out, feat = (out + out_f) / 2, (feat + feat_f) / 2
        logits.append(out.cpu().numpy())
        feats.append(feat.cpu().numpy())
    return np.concatenate(logits), np.concatenate(feats)


def evaluate_loss(
    model: FerResNet, data: FaceSet, side: int, device: str = "auto"
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on centre crops."""
    logits, _ = predict(model, data, side, device=device)
    log_prob = torch.log_softmax(torch.from_numpy(logits), dim=1)
    labels = torch.from_numpy(data.labels)
    loss = float(nn.functional.nll_loss(log_prob, labels))
    return loss, float((logits.argmax(1) == data.labels).mean())


EpochCallback = Callable[[int, dict[str, float]], None]


def frozen_modules(model: FerResNet, blocks: int) -> list[nn.Module]:
    """The first ``blocks`` entries of :data:`BLOCKS` as modules of ``model``."""
    return [getattr(model.net, name) for group in BLOCKS[:blocks] for name in group]


def param_groups(model: FerResNet, config: TrainConfig) -> list[dict[str, Any]]:
    """Optimiser groups: the trainable backbone at ``lr × backbone_lr_scale`` (``lr_scale``
    key), the classifier at ``lr``; frozen blocks are left out."""
    frozen = {id(p) for m in frozen_modules(model, config.freeze_blocks) for p in m.parameters()}
    head = {id(p) for p in model.net.fc.parameters()}
    backbone = [p for p in model.parameters() if id(p) not in frozen and id(p) not in head]
    groups = [{"params": list(model.net.fc.parameters()), "lr_scale": 1.0}]
    if backbone and config.backbone_lr_scale > 0:
        groups.insert(0, {"params": backbone, "lr_scale": config.backbone_lr_scale})
    return groups


def _set_frozen(model: FerResNet, blocks: int, frozen: bool) -> None:
    for module in frozen_modules(model, blocks):
        for p in module.parameters():
            p.requires_grad_(not frozen)


def chunks(total: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``total`` items; a lone last item joins
    the chunk before it (BatchNorm cannot train on one face whose last feature map is 1×1)."""
    starts = list(range(0, total, size))
    if len(starts) > 1 and total - starts[-1] == 1:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, starts[1:] + [total] * bool(starts), strict=True)]


def _mixed_batch(
    train: FaceSet,
    indices: np.ndarray,
    extra: FaceSet | None,
    extra_indices: np.ndarray | None,
    config: TrainConfig,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One training batch (random crops): ``train[indices]`` then ``extra[extra_indices]``, their
    labels, the distributions the loss learns (:meth:`FaceSet.target_rows`) and the teacher
    logits when distilling (else ``None``). :func:`fit` runs it through the network in chunks of
    ``micro_batch or batch_size`` faces (:func:`chunks`): chunks that hold both sources let
    BatchNorm's running statistics, which serving uses, see the mix it trains on."""
    sources = [(train, indices)] + ([(extra, extra_indices)] if extra_indices is not None else [])
    xs, ys, targets, softs = [], [], [], []
    for source, picks in sources:
        x, y = source.batch(picks, config.input_size, rng, config.online_flip)
        xs.append(x)
        ys.append(y)
        targets.append(source.target_rows(picks, config.label_smoothing))
        if config.distill_weight > 0:
            softs.append(torch.from_numpy(source.soft[picks]))
    return torch.cat(xs), torch.cat(ys), torch.cat(targets), torch.cat(softs) if softs else None


def sparse_head_mask(model: FerResNet, features: int) -> torch.utils.hooks.RemovableHandle:
    """Keep, per class, the ``features`` classifier weights of largest magnitude and zero the
    rest; the returned hook zeroes their gradient (remove it after training). Zero weights stay
    0: no gradient, and weight decay and momentum of 0 are 0."""
    weight = model.net.fc.weight
    keep = weight.detach().abs().topk(features, dim=1).indices
    mask = torch.zeros_like(weight).scatter_(1, keep, 1.0)
    with torch.no_grad():
        weight.mul_(mask)
    return weight.register_hook(lambda grad: grad * mask)


def train_one_epoch(
    model: FerResNet,
    optimiser: torch.optim.Optimizer,
    train: FaceSet,
    extra: FaceSet | None,
    config: TrainConfig,
    rng: np.random.Generator,
    desc: str,
) -> dict[str, float]:
    """One pass over ``train`` (each batch topped up with ``extra`` faces to
    ``config.extra_share``; micro-batches accumulate into one step); the mean loss and accuracy."""
    device = next(model.parameters()).device
    n_extra = (
        round(config.batch_size * config.extra_share / (1 - config.extra_share)) if extra else 0
    )
    chunk = config.micro_batch or config.batch_size
    model.train()
    for module in frozen_modules(model, config.freeze_blocks):
        module.eval()  # frozen BatchNorm keeps its pre-trained statistics
    order = rng.permutation(len(train))
    seen, loss_sum, correct = 0, 0.0, 0
    bar = tqdm(range(0, len(order), config.batch_size), desc=desc, unit="batch", leave=False)
    for begin in bar:
        batch = order[begin : begin + config.batch_size]
        optimiser.zero_grad(set_to_none=True)
        drawn = rng.integers(0, len(extra), n_extra) if n_extra else None
        x, y, target, soft = _mixed_batch(train, batch, extra, drawn, config, rng)
        for part in chunks(len(y), chunk):
            xs, ys = x[part].to(device, memory_format=torch.channels_last), y[part].to(device)
            ts = target[part].to(device)
            if config.mixup_alpha > 0:
                lam = float(rng.beta(config.mixup_alpha, config.mixup_alpha))
                perm = torch.from_numpy(rng.permutation(len(ys))).to(device)
                out = model(lam * xs + (1 - lam) * xs[perm])
                loss = soft_cross_entropy(out, lam * ts + (1 - lam) * ts[perm])
            else:
                out = model(xs)
                loss = soft_cross_entropy(out, ts)
                if soft is not None:
                    kd = distillation_loss(out, soft[part].to(device), config.distill_temperature)
                    loss = (1 - config.distill_weight) * loss + config.distill_weight * kd
            (loss * len(ys) / len(y)).backward()
            loss_sum += float(loss.detach()) * len(ys)
            correct += int((out.argmax(1) == ys).sum())
            seen += len(ys)
        optimiser.step()
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
    return {"train_loss": loss_sum / seen, "train_acc": correct / seen}


class BestState:
    """The model's weights at its best validation accuracy so far (ties: the lower loss)."""

    def __init__(self) -> None:
        self.key, self.state = (-1.0, 0.0), None

    def offer(self, model: FerResNet, val_acc: float, val_loss: float) -> bool:
        """Keep a copy of the weights if this epoch is the best; whether it was."""
        if (val_acc, -val_loss) > self.key:
            self.key, self.state = (val_acc, -val_loss), copy.deepcopy(model.state_dict())
            return True
        return False


def fit(
    model: FerResNet,
    train: FaceSet,
    val: FaceSet | None,
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    desc: str = "train",
    extra: FaceSet | None = None,
) -> tuple[FerResNet, list[dict[str, float]]]:
    """SGD with momentum and weight decay; returns the best model by validation accuracy (the
    last one without validation) and the per-epoch history.

    An epoch is one pass over ``train`` (:func:`train_one_epoch`); with ``extra`` and
    ``config.extra_share`` each batch also holds faces drawn at random from ``extra`` (that share
    of the batch). The loss is :func:`soft_cross_entropy` against each face's
    :meth:`FaceSet.target_rows` (smoothed one-hot labels, or a set's own target distributions);
    with ``config.distill_weight`` it mixes in the teacher's soft labels of sets that have them
    (:func:`distillation_loss`).
    Then validation (:func:`evaluate_loss`) and the best weights kept (:class:`BestState`)."""
    if config.extra_share > 0 and extra is None:
        raise ValueError("extra_share is set but no extra data set was given")
    if config.distill_weight > 0 and (
        train.soft is None or (extra is not None and extra.soft is None)
    ):
        raise ValueError("distill_weight is set but a training set has no teacher soft labels")
    seed_everything(config.seed)
    model = model.to(resolve_device(config.device), memory_format=torch.channels_last)
    model.dropout.p = config.dropout  # ~25 % faster convs on CPU in channels_last
    hook = sparse_head_mask(model, config.head_features) if config.head_features else None
    groups = param_groups(model, config)
    _set_frozen(model, config.freeze_blocks, True)
    optimiser = torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    rng = np.random.default_rng(config.seed)
    history: list[dict[str, float]] = []
    best = BestState()
    for epoch in range(config.epochs):
        start = time.perf_counter()
        lr = config.lr * _lr_factor(config, epoch)
        for group in optimiser.param_groups:
            group["lr"] = lr * group["lr_scale"]
        step = f"{desc} {epoch + 1}/{config.epochs}"
        row = {"epoch": epoch + 1, "lr": lr}
        row.update(train_one_epoch(model, optimiser, train, extra, config, rng, step))
        if val is not None:
            row["val_loss"], row["val_acc"] = evaluate_loss(
                model, val, config.input_size, config.device
            )
            if best.offer(model, row["val_acc"], row["val_loss"]):
                row["best"] = 1.0
        row["seconds"] = time.perf_counter() - start
        history.append(row)
        tqdm.write(
            f"{desc} epoch {epoch + 1}/{config.epochs}: loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.3f}"
            + (f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}" if val else "")
            + f" | {row['seconds']:.0f}s"
        )
        if on_epoch is not None:
            on_epoch(epoch + 1, row)
    _set_frozen(model, config.freeze_blocks, False)
    if hook is not None:
        hook.remove()
    model.dropout.p = 0.0
    model = model.to(memory_format=torch.contiguous_format)
    if best.state is not None:
        model.load_state_dict(best.state)
    return model.eval(), history
