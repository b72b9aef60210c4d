"""`build_model(spec)`: encoder (single- or multi-view) + one Linear classifier on its embedding."""

from __future__ import annotations

import torch
from torch import nn

from volkd.errors import ConfigError
from volkd.models.backbones import build_encoder
from volkd.models.multiview import MultiViewEncoder
from volkd.models.spec import ModelSpec


class VolkdModel(nn.Module):
    """``model(x) -> (logits, embedding)`` with ``logits == model.classifier(embedding)``.

    The embedding is the pooled feature vector that feeds the classifier, so a feature-level KD
    loss on it trains the very weights that produce the logits.
    """

    def __init__(self, spec: ModelSpec, encoder: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = encoder
        self.embedding_dim: int = int(encoder.out_dim)
        self.classifier = nn.Linear(self.embedding_dim, spec.num_classes)

    @property
    def expected_input(self) -> str:
        """Human-readable input layout, e.g. ``(B, V=3, C=3, H, W)``."""
        sp = "H, W" if self.spec.spatial_dims == 2 else "D, H, W"
        views = f"V={self.spec.n_views}, " if self.spec.multiview else ""
        return f"(B, {views}C={self.spec.in_channels}, {sp})"

    def check_input(self, x: torch.Tensor) -> None:
        """Raise `ConfigError` when ``x`` does not have the layout the spec promises."""
        s = self.spec
        ndim = 2 + s.spatial_dims + (1 if s.multiview else 0)
        ok = x.ndim == ndim and x.shape[1 + s.multiview] == s.in_channels and (not s.multiview or x.shape[1] == s.n_views)
        if not ok:
            raise ConfigError(
                f"model input has shape {tuple(x.shape)} but the model spec ({s.arch}, spatial_dims={s.spatial_dims}, "
                f"n_views={s.n_views}, in_channels={s.in_channels}) expects {self.expected_input}: make the "
                "projection spec and the model spec agree"
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        embedding = self.encoder(x)
        return self.classifier(embedding), embedding


def build_model(spec: ModelSpec | dict) -> VolkdModel:
    """Build the network described by ``spec`` (a `ModelSpec` or its dict form)."""
    if isinstance(spec, dict):
        spec = ModelSpec.from_dict(spec)
    if spec.multiview:
        encoder: nn.Module = MultiViewEncoder(lambda: build_encoder(spec), spec.n_views, spec.shared_encoder)
    else:
        encoder = build_encoder(spec)
    return VolkdModel(spec, encoder)
