"""The networks of :mod:`.torch_vision`: torchvision's ResNet and VGG families built from
the architecture alone (``weights=None``), a compact VGG head, and the spec that rebuilds
a saved network from a model's ``details``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import vgg as tv_vgg

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_ARCHITECTURE",
    "VGG_WIDTH",
    "NetSpec",
    "build",
    "has_batchnorm",
    "replace_head",
]

ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "resnet": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    "vgg": tuple(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
}
DEFAULT_ARCHITECTURE = {"resnet": "resnet50", "vgg": "vgg16"}  # the seed trains ResNet-50
_VGG_CONFIG = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}
VGG_WIDTH = 4096  # torchvision's classifier width


@dataclass(frozen=True)
class NetSpec:
    """What rebuilds a network: stored in ``details`` and read back at load time."""

    model_type: str
    architecture: str
    num_classes: int
    classifier_width: int = VGG_WIDTH
    global_pool: bool = False
    dropout: float = 0.5  # torchvision's; no weights, so fine-tuning may change it

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "num_classes": self.num_classes}
        if self.model_type == "vgg":
            out.update(
                classifier_width=self.classifier_width,
                global_pool=self.global_pool,
                dropout=self.dropout,
            )
        return out

    @classmethod
    def from_details(cls, model_type: str, details: dict[str, Any]) -> NetSpec:
        """Raises ValueError when ``details`` do not describe a model of ``model_type``."""
        arch = details.get("architecture")
        n = details.get("num_classes")
        if arch not in ARCHITECTURES.get(model_type, ()):
            raise ValueError(f"details.architecture {arch!r} is not a {model_type} architecture")
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"details.num_classes must be an integer >= 2, got {n!r}")
        width = details.get("classifier_width", VGG_WIDTH)
        pool = details.get("global_pool", False)
        dropout = details.get("dropout", 0.5)
        if (
            isinstance(width, bool)
            or not isinstance(width, int)
            or not isinstance(pool, bool)
            or not isinstance(dropout, int | float)
        ):
            raise ValueError("details.classifier_width / global_pool / dropout are malformed")
        return cls(model_type, str(arch), n, width, pool, float(dropout))


class _CompactVGG(nn.Module):
    """torchvision's VGG with a configurable head; same forward and state-dict keys. Built
    by hand because torchvision's constructor always allocates the 25088x4096 layer first."""

    def __init__(self, features: nn.Module, avgpool: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        out: torch.Tensor = self.classifier(torch.flatten(x, 1))
        return out


def _init_features(features: nn.Module) -> None:
    # torchvision's VGG initialisation of the convolutions. The compact head keeps PyTorch's
    # fan-in scaled Linear default: torchvision's fixed N(0, 0.01) suits 4096-wide layers
    # and starves narrow ones of signal (a width-64 head then barely trains).
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def build(spec: NetSpec) -> nn.Module:
    if spec.model_type == "resnet":
        resnet: nn.Module = getattr(torchvision.models, spec.architecture)(
            weights=None, num_classes=spec.num_classes
        )
        return resnet
    if spec.classifier_width == VGG_WIDTH and not spec.global_pool:
        standard: nn.Module = getattr(torchvision.models, spec.architecture)(
            weights=None, num_classes=spec.num_classes, dropout=spec.dropout
        )
        return standard
    features = tv_vgg.make_layers(
        tv_vgg.cfgs[_VGG_CONFIG[spec.architecture.removesuffix("_bn")]],
        batch_norm=spec.architecture.endswith("_bn"),
    )
    _init_features(features)
    pool_size = 1 if spec.global_pool else 7
    width = spec.classifier_width
    classifier = nn.Sequential(  # torchvision's head layout, so the state-dict keys match
        nn.Linear(512 * pool_size * pool_size, width),
        nn.ReLU(True),
        nn.Dropout(spec.dropout),
        nn.Linear(width, width),
        nn.ReLU(True),
        nn.Dropout(spec.dropout),
        nn.Linear(width, spec.num_classes),
    )
    return _CompactVGG(features, nn.AdaptiveAvgPool2d(pool_size), classifier)


def replace_head(model: nn.Module, spec: NetSpec, num_classes: int) -> None:
    """A fresh final layer with ``num_classes`` outputs (fine-tuning on other classes)."""
    if spec.model_type == "resnet":
        old = model.fc
        assert isinstance(old, nn.Linear)
        model.fc = nn.Linear(old.in_features, num_classes)
        return
    classifier = model.classifier
    assert isinstance(classifier, nn.Sequential)
    last = classifier[-1]
    assert isinstance(last, nn.Linear)
    classifier[-1] = nn.Linear(last.in_features, num_classes)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
