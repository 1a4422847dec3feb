"""The paper's network: torchvision ResNet-18 for one gray channel and 7 classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet18

from ferops.data import CLASSES

FEATURES = 512


class FerResNet(nn.Module):
    """ResNet-18 (``weights=None``) whose first convolution takes 1 gray channel.

    ``forward`` returns logits; :meth:`forward_features` also returns the 512 average-pool
    features the paper exported ("feature1 … feature512") and the rule trees are fitted on.
    """

    def __init__(self, num_classes: int = len(CLASSES), dropout: float = 0.0) -> None:
        super().__init__()
        net = resnet18(weights=None, num_classes=num_classes)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.net = net
        #: Dropout on the pooled features before ``fc`` (no weights: the state dict is unchanged;
        #: identity in eval mode, so exports and predictions never see it).
        self.dropout = nn.Dropout(dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return torch.flatten(n.avgpool(x), 1)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        return self.net.fc(self.dropout(feats)), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.fc(self.dropout(self.features(x)))


class LogitsAndFeatures(nn.Module):
    """Export wrapper: one input, two named outputs (``logits``, ``features``)."""

    def __init__(self, model: FerResNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_features(x)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cpu``/``cuda`` as asked (CUDA must exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not one of ['auto', 'cpu', 'cuda']")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device")
    return torch.device(name)


def save_checkpoint(path: Path, model: FerResNet, meta: dict[str, Any]) -> None:
    """Weights plus the metadata needed to use them (input size, normalisation, classes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": meta}, path)


def load_checkpoint(path: Path) -> tuple[FerResNet, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_checkpoint` (tensors only: ``weights_only=True``)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = FerResNet(num_classes=len(blob["meta"].get("classes", CLASSES)))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, blob["meta"]
