"""Multi-view fusion at the feature level (joint fusion / FuseMe)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class MultiViewEncoder(nn.Module):
    """Encode each view of ``(B, V, C, *spatial)`` and concatenate: ``(B, V × per-view dim)``.

    ``shared=True`` (the study): one encoder for all views, run once on the views folded into the
    batch (so BatchNorm statistics pool the views). ``shared=False`` (the original FuseMe): one
    encoder per view. The concatenation is view-major: ``[emb(view 0), emb(view 1), …]``.
    """

    def __init__(self, make_encoder: Callable[[], nn.Module], n_views: int, shared: bool = True) -> None:
        super().__init__()
        self.n_views = n_views
        self.shared = shared
        self.encoders = nn.ModuleList([make_encoder() for _ in range(1 if shared else n_views)])
        self.view_dim: int = self.encoders[0].out_dim
        self.out_dim = n_views * self.view_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, v = x.shape[:2]
        if self.shared:
            return self.encoders[0](x.flatten(0, 1)).reshape(b, v * self.view_dim)
        return torch.cat([enc(x[:, i]) for i, enc in enumerate(self.encoders)], dim=1)
