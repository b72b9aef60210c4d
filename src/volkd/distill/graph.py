"""Batch relation graphs and the study's graph-distillation terms (METHOD.md §5).

``G(X) = A(X) / max(A(X))`` for a batch ``X`` (B×D) and an affinity ``A``:

- ``cosine`` (the study's default): ``A = N Nᵀ``, ``N`` the row-L2-normalised ``X``;
- ``knn``: the cosine graph restricted to k-nearest-neighbour edges, ``A = M ⊙ N Nᵀ`` with
  ``M_ij = 1`` when ``j`` is among the ``k`` nearest (Euclidean) neighbours of ``i`` or
  ``i == j``. ``M`` is ``mask`` when given — the graph-KD terms pass the TEACHER's kNN mask to
  both sides, so the student is taught its cosine similarities on the teacher's neighbourhood
  edges — else ``x``'s own. Differentiable through the cosine (the binary mask alone,
  :func:`knn_affinity`, has zero gradient and is for analysis only);
- ``rbf``: ``A = exp(−u)``, ``u = D²/(2σ²)``, ``σ`` the mean distance to the ``k``-th nearest neighbour;
- ``rbf_taylor``: ``exp(−u) = 1/exp(u)`` with ``exp(u)`` replaced by its Taylor series:
  ``A = 1 / Σ_{n≤order} uⁿ/n!`` — positive and decreasing in the distance for every order
  (the plain series of ``exp(−u)``, ``1 − u + u²/2``, rises again for u > 1).

``k`` is clipped to ``B − 1``. Every function is NaN-free (values and gradients) for identical
or all-zero rows: norms and distances are clamped at ``eps``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from volkd.errors import ConfigError

AFFINITIES: tuple[str, ...] = ("cosine", "knn", "rbf", "rbf_taylor")
EPS = 1e-8


def _check_batch(x: torch.Tensor, what: str = "embeddings") -> torch.Tensor:
    if x.ndim != 2:
        raise ConfigError(f"{what} must be a (batch, features) matrix, got shape {tuple(x.shape)}")
    return x


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances (B×B), exact zeros on the diagonal, safe gradients.

    Computed from the Gram matrix of the batch-centred rows (O(B²D), no B×B×D tensor); centring
    removes the common component, so near-identical rows lose no precision (identical → exact 0).
    """
    xc = x - x.mean(dim=0, keepdim=True)
    g = xc @ xc.t()
    n = torch.diagonal(g)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return (n.unsqueeze(0) + n.unsqueeze(1) - 2 * g).clamp_min(0.0).masked_fill(eye, 0.0)


def safe_distances(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Pairwise Euclidean distances with zero diagonal and a finite gradient everywhere."""
    d2 = squared_distances(x)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return torch.where(eye | (d2 <= eps), torch.zeros_like(d2), d2.clamp_min(eps).sqrt())


def kth_neighbour_distance(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over rows of the distance to each row's ``k``-th nearest other row (k clipped to B−1)."""
    b = x.shape[0]
    if b < 2:
        return x.new_zeros(())
    k = max(1, min(k, b - 1))
    d = safe_distances(x)
    d = d + torch.diag(torch.full((b,), float("inf"), dtype=d.dtype, device=d.device))  # exclude self
    return d.topk(k, dim=1, largest=False).values[:, k - 1].mean()


def cosine_affinity(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``N Nᵀ`` with ``N`` the row-L2-normalised ``x`` (zero rows stay zero)."""
    n = F.normalize(x, p=2, dim=1, eps=eps)
    return n @ n.t()


def knn_affinity(x: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Binary k-nearest-neighbour graph (self included), the ``knn`` mask; no gradient (analysis only)."""
    b = x.shape[0]
    k = max(0, min(k, b - 1))
    with torch.no_grad():
        d2 = squared_distances(x.detach())
        d2.fill_diagonal_(float("-inf"))  # self is always a neighbour (rank 0)
        idx = d2.topk(k + 1, dim=1, largest=False).indices
        a = torch.zeros_like(d2).scatter_(1, idx, 1.0)
    return a


def rbf_affinity(x: torch.Tensor, k: int = 5, order: int | None = None, eps: float = EPS) -> torch.Tensor:
    """``exp(−u)``, ``u = D²/(2σ²)``, σ = mean distance to the k-th neighbour; with ``order``,
    ``1 / Σ_{n≤order} uⁿ/n!`` (positive, monotone decreasing in u, → exp(−u) as order grows)."""
    d2 = squared_distances(x)
    sigma = kth_neighbour_distance(x, k).clamp_min(math.sqrt(eps))
    u = d2 / (2 * sigma * sigma)
    if order is None:
        return torch.exp(-u)
    if order < 1:
        raise ConfigError(f"rbf_taylor 'order' must be ≥ 1, got {order}")
    series = torch.ones_like(u)
    term = torch.ones_like(u)
    for n in range(1, order + 1):
        term = term * u / n
        series = series + term
    return 1.0 / series


def graph_affinity(x: torch.Tensor, kind: str = "cosine", k: int = 5, order: int = 2, eps: float = EPS,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """The batch graph ``G(X) = A(X) / max(A(X))`` (B×B) for affinity ``kind``; ``mask`` (B×B 0/1,
    ``knn`` only) replaces ``x``'s own kNN edges (graph KD passes the teacher's)."""
    _check_batch(x)
    if mask is not None and kind != "knn":
        raise ConfigError(f"a neighbourhood mask applies to the 'knn' affinity only, not {kind!r}")
    if kind == "cosine":
        a = cosine_affinity(x, eps)
    elif kind == "knn":
        m = knn_affinity(x, k) if mask is None else mask.to(x.dtype)
        if m.shape != (x.shape[0], x.shape[0]):
            raise ConfigError(f"knn mask must be {x.shape[0]}×{x.shape[0]} (one row per scan of the batch), got {tuple(m.shape)}")
        a = cosine_affinity(x, eps) * m
    elif kind == "rbf":
        a = rbf_affinity(x, k, None, eps)
    elif kind == "rbf_taylor":
        a = rbf_affinity(x, k, order, eps)
    else:
        raise ConfigError(f"unknown graph affinity {kind!r}; choose one of {', '.join(AFFINITIES)}")
    return a / a.max().clamp_min(eps)


def teacher_graph(ft: torch.Tensor, kind: str = "cosine", **kw: Any) -> torch.Tensor:
    """``G(f_t)`` without autograd (the teacher is frozen)."""
    with torch.no_grad():
        return graph_affinity(ft.detach(), kind, **kw)


def teacher_knn_mask(ft: torch.Tensor, kind: str, k: int = 5) -> torch.Tensor | None:
    """The teacher's kNN edges for the ``knn`` affinity (None for the others)."""
    if kind != "knn":
        return None
    return knn_affinity(ft.detach(), k)


def graph_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``mean((a − b)²)`` over all B×B entries."""
    return ((a - b) ** 2).mean()


def identity_mse(g: torch.Tensor) -> torch.Tensor:
    """``mean((g − I)²)``."""
    return graph_mse(g, torch.eye(g.shape[0], dtype=g.dtype, device=g.device))


def feature_graph_loss(fs: torch.Tensor, ft: torch.Tensor, kind: str = "cosine", **kw: Any) -> torch.Tensor:
    """``L_fg = mean((G(f_s) − G(f_t))²)``; the teacher graph is detached (teacher frozen).
    ``knn``: both graphs on the teacher's kNN edges."""
    _check_same_batch(fs, ft)
    kw.pop("mask", None)
    mask = teacher_knn_mask(ft, kind, int(kw.get("k", 5)))
    return graph_mse(graph_affinity(fs, kind, mask=mask, **kw), teacher_graph(ft, kind, mask=mask, **kw))


def logit_graph_loss(zs: torch.Tensor, zt: torch.Tensor, temperature: float = 5.0, kind: str = "cosine",
                     **kw: Any) -> torch.Tensor:
    """``L_lg = mean((G(log_softmax(z_s/T)) − G(log_softmax(z_t/T)))²)``."""
    return feature_graph_loss(F.log_softmax(zs / temperature, dim=1), F.log_softmax(zt / temperature, dim=1), kind, **kw)


def metric_loss(fs: torch.Tensor, kind: str = "cosine", **kw: Any) -> torch.Tensor:
    """``L_metric = mean((G(f_s) − I)²)``: pushes different scans of the batch apart (``knn``:
    on ``mask``'s edges, the student's own kNN edges without one)."""
    return identity_mse(graph_affinity(fs, kind, **kw))


def _check_same_batch(s: torch.Tensor, t: torch.Tensor) -> None:
    _check_batch(s, "student embeddings")
    _check_batch(t, "teacher embeddings")
    if s.shape[0] != t.shape[0]:
        raise ConfigError(f"student batch ({s.shape[0]}) and teacher batch ({t.shape[0]}) differ: pass the "
                          "teacher outputs of the same scans, in the same order")
