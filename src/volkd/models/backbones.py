"""Encoders (input → pooled feature vector) from MONAI, 2D and 3D from one code path.

Each encoder maps ``(B, C, *spatial)`` to ``(B, out_dim)``: the globally average-pooled features
of the last stage. `build_model` puts one Linear classifier on top of exactly that vector.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import ResidualUnit
from monai.networks.layers.factories import Conv, Pool
from monai.networks.nets import DenseNet121, resnet10, resnet18, resnet34
from torch import nn

from volkd.models.spec import ModelSpec

_RESNETS = {"resnet10": resnet10, "resnet18": resnet18, "resnet34": resnet34}


class ResNetEncoder(nn.Module):
    """MONAI ResNet-10/18/34 without its fc: conv stem, 4 stages, global average pool."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.net = _RESNETS[spec.arch](
            spatial_dims=spec.spatial_dims,
            n_input_channels=spec.in_channels,
            conv1_t_size=spec.stem_kernel,
            conv1_t_stride=spec.stem_stride,
            widen_factor=spec.base_width / 64.0,
            feed_forward=False,
        )
        self.out_dim = self.net.layer4[-1].conv2.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DenseNetEncoder(nn.Module):
    """MONAI DenseNet-121 features + its final ReLU and global average pool (no Linear)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        net = DenseNet121(spatial_dims=spec.spatial_dims, in_channels=spec.in_channels, out_channels=spec.num_classes,
                          init_features=spec.base_width)
        k, dims = spec.stem_kernel, spec.spatial_dims
        if (k, spec.stem_stride) != (7, 2):  # MONAI's stem is fixed at 7, stride 2: rebuild it when asked otherwise
            conv0 = Conv[Conv.CONV, dims](spec.in_channels, spec.base_width, kernel_size=k, stride=spec.stem_stride,
                                          padding=k // 2, bias=False)
            nn.init.kaiming_normal_(conv0.weight)
            net.features.conv0 = conv0
        self.features = net.features
        self.out_dim = net.class_layers.out.in_features
        self.pool = nn.Sequential(net.class_layers.relu, net.class_layers.pool, net.class_layers.flatten)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))


class LightCNNEncoder(nn.Module):
    """Four MONAI residual units (3-kernel, BN, ReLU; widths w, 2w, 4w, 8w, each stride 2 —
    the first uses ``stem_stride``) and a global average pool: a CPU-friendly 2D/3D CNN."""

    def __init__(self, spec: ModelSpec, n_blocks: int = 4) -> None:
        super().__init__()
        dims, w = spec.spatial_dims, spec.base_width
        chans = [spec.in_channels] + [w * 2**i for i in range(n_blocks)]
        blocks = [
            ResidualUnit(dims, chans[i], chans[i + 1], strides=spec.stem_stride if i == 0 else 2, kernel_size=3,
                         subunits=2, act="RELU", norm="BATCH")
            for i in range(n_blocks)
        ]
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(Pool[Pool.ADAPTIVEAVG, dims](1), nn.Flatten(1))
        self.out_dim = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(x))


def build_encoder(spec: ModelSpec) -> nn.Module:
    """One single-view encoder for ``spec`` (its ``out_dim`` is the per-view embedding size)."""
    if spec.arch in _RESNETS:
        return ResNetEncoder(spec)
    if spec.arch == "densenet121":
        return DenseNetEncoder(spec)
    return LightCNNEncoder(spec)
