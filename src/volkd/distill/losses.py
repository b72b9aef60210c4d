"""Knowledge-distillation losses chosen by name: ``none``, ``graph`` (the study's), ``hinton``, ``sp``, ``rkd``.

Call convention (all losses): ``loss(student_emb, student_logits, teacher_emb, teacher_logits)
-> (total_kd, parts)``; ``total_kd`` is a scalar tensor, ``parts`` its named terms as floats
(for logs). The student's classification loss is not inside. The trainer combines them as

    total = w_cls · CE(z_s, y) + w_kd · total_kd            (see `combine`)

For ``graph``, ``total_kd = w_fg·L_fg + w_lg·L_lg + w_metric·L_metric``. METHOD.md's
``w_cls·CE + w_kd·(L_fg + L_lg) + L_metric`` is therefore ``w_fg = w_lg = 1`` and
``w_metric = 1 / w_kd`` — the default ``w_metric = 0.2`` matches the study's ``w_kd = 5``.

Tiny batches: relational losses (graph, sp, rkd) have a ``min_batch`` (default 8): a trainer
gives a batch smaller than that no KD term (`KDLoss.applies`; the loss itself still computes
whatever it is called on). Called on B < 2 they return an exact 0 (no NaN, a valid graph for
backward); rkd's angle term is 0 when B < 3. ``hinton`` works for any B ≥ 1.

`KDLoss.terms` returns the terms as detached 0-dim tensors (no host sync per batch: the
trainer's path); calling the loss returns them as floats.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from volkd.distill.graph import (
    AFFINITIES,
    EPS,
    _check_same_batch,
    graph_affinity,
    graph_mse,
    identity_mse,
    logit_graph_loss,
    safe_distances,
    teacher_graph,
    teacher_knn_mask,
)
from volkd.errors import ConfigError

KDResult = tuple[torch.Tensor, dict[str, float]]
#: ``(total_kd, {term: detached 0-dim tensor})``
KDTerms = tuple[torch.Tensor, dict[str, torch.Tensor]]
#: Smallest batch a relational loss (graph, sp, rkd) teaches from by default.
MIN_BATCH = 8


class KDLoss:
    """Base class: a named, parameterised KD loss; subclasses implement `compute`."""

    name: ClassVar[str] = ""
    requires_teacher: ClassVar[bool] = True
    #: batches smaller than this get no KD term from a trainer (relational losses: a parameter)
    min_batch: int = 1

    def params(self) -> dict[str, Any]:
        """The constructor parameters (JSON-serialisable), for configs and provenance."""
        return {p: getattr(self, p) for p in inspect.signature(type(self).__init__).parameters if p != "self"}

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., **params}``; `get_kd_loss(**d)` rebuilds the loss."""
        return {"name": self.name, **self.params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __call__(self, student_emb: torch.Tensor, student_logits: torch.Tensor, teacher_emb: torch.Tensor | None,
                 teacher_logits: torch.Tensor | None) -> KDResult:
        total, terms = self.terms(student_emb, student_logits, teacher_emb, teacher_logits)
        parts = {k: float(v) for k, v in terms.items()}
        parts["kd"] = float(total.detach())
        return total, parts

    def terms(self, student_emb: torch.Tensor, student_logits: torch.Tensor, teacher_emb: torch.Tensor | None,
              teacher_logits: torch.Tensor | None) -> KDTerms:
        """``total_kd`` and its named terms as detached 0-dim tensors (no host synchronisation)."""
        if self.requires_teacher and (teacher_emb is None or teacher_logits is None):
            raise ConfigError(f"KD loss {self.name!r} needs the teacher's embeddings and logits")
        return self.compute(student_emb, student_logits, teacher_emb, teacher_logits)

    def applies(self, batch_size: int) -> bool:
        """Whether a trainer gives a (global) batch of ``batch_size`` scans a KD term."""
        return batch_size >= self.min_batch

    def compute(self, se: torch.Tensor, sl: torch.Tensor, te: torch.Tensor | None, tl: torch.Tensor | None) -> KDTerms:
        raise NotImplementedError


_REGISTRY: dict[str, type[KDLoss]] = {}


def register_kd_loss(cls: type[KDLoss]) -> type[KDLoss]:
    """Class decorator: make ``cls`` available to `get_kd_loss` under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def kd_loss_names() -> list[str]:
    """Registered KD loss names, in registration order."""
    return list(_REGISTRY)


def get_kd_loss(name: str, **params: Any) -> KDLoss:
    """Build the KD loss ``name`` with ``params``; unknown names/parameters raise `ConfigError`."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown KD loss {name!r}; choose one of {', '.join(_REGISTRY)}")
    cls = _REGISTRY[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"KD loss {name!r} has no parameter(s) {', '.join(unknown)}; "
                          f"accepted: {', '.join(accepted) or 'none'}")
    return cls(**params)


def combine(ce: torch.Tensor, total_kd: torch.Tensor, w_cls: float = 1.0, w_kd: float = 1.0) -> torch.Tensor:
    """The student's objective: ``w_cls · CE + w_kd · total_kd``."""
    return w_cls * ce + w_kd * total_kd


def _zero(*xs: torch.Tensor) -> torch.Tensor:
    """An exact 0 still connected to the ``xs`` that need grad (``backward`` works, zero grads)."""
    out = xs[0].new_zeros(())
    for x in xs:
        if x.requires_grad:
            out = out + torch.where(torch.isfinite(x), x, 0.0).sum() * 0.0
    return out


def _nonneg(name: str, **ws: float) -> None:
    for k, v in ws.items():
        if v < 0:
            raise ConfigError(f"KD loss {name!r}: {k} must be ≥ 0, got {v}")


def _min_batch(name: str, min_batch: int) -> int:
    if isinstance(min_batch, bool) or not isinstance(min_batch, int) or min_batch < 2:
        raise ConfigError(f"KD loss {name!r}: min_batch must be an integer ≥ 2 (a relation needs two scans), got {min_batch!r}")
    return min_batch


@register_kd_loss
class NoKD(KDLoss):
    """``none``: no distillation (total_kd = 0; the teacher is not needed)."""

    name = "none"
    requires_teacher = False

    def __init__(self) -> None:
        pass

    def compute(self, se, sl, te, tl) -> KDTerms:  # noqa: ANN001
        return se.new_zeros(()), {}


@register_kd_loss
class GraphKD(KDLoss):
    """The study's batch-graph loss: ``w_fg·L_fg + w_lg·L_lg + w_metric·L_metric`` (weight 0 = term off).

    ``affinity="knn"``: every graph is the cosine graph on the TEACHER's kNN edges (of the
    embeddings for L_fg and L_metric, of the tempered log-probabilities for L_lg)."""

    name = "graph"

    def __init__(self, affinity: str = "cosine", w_fg: float = 1.0, w_lg: float = 1.0, w_metric: float = 0.2,
                 temperature: float = 5.0, k: int = 5, order: int = 2, min_batch: int = MIN_BATCH) -> None:
        if affinity not in AFFINITIES:
            raise ConfigError(f"graph KD: unknown affinity {affinity!r}; choose one of {', '.join(AFFINITIES)}")
        _nonneg(self.name, w_fg=w_fg, w_lg=w_lg, w_metric=w_metric)
        if temperature <= 0:
            raise ConfigError(f"graph KD: temperature must be > 0, got {temperature}")
        if k < 1 or order < 1:
            raise ConfigError(f"graph KD: k and order must be ≥ 1, got k={k}, order={order}")
        self.affinity, self.w_fg, self.w_lg, self.w_metric = affinity, w_fg, w_lg, w_metric
        self.temperature, self.k, self.order = temperature, k, order
        self.min_batch = _min_batch(self.name, min_batch)

    def compute(self, se, sl, te, tl) -> KDTerms:  # noqa: ANN001
        _check_same_batch(se, te)
        if se.shape[0] < 2:
            zero = se.new_zeros(())
            return _zero(se, sl), {"fg": zero, "lg": zero, "metric": zero}
        kw = {"kind": self.affinity, "k": self.k, "order": self.order}
        total, parts = _zero(se, sl), {}
        mask = teacher_knn_mask(te, self.affinity, self.k)  # None unless affinity = knn
        gs = graph_affinity(se, mask=mask, **kw) if (self.w_fg or self.w_metric) else None  # shared by L_fg and L_metric
        if self.w_fg:
            fg = graph_mse(gs, teacher_graph(te, mask=mask, **kw))
            total, parts["fg"] = total + self.w_fg * fg, fg.detach()
        if self.w_lg:
            lg = logit_graph_loss(sl, tl, self.temperature, **kw)
            total, parts["lg"] = total + self.w_lg * lg, lg.detach()
        if self.w_metric:
            m = identity_mse(gs)
            total, parts["metric"] = total + self.w_metric * m, m.detach()
        return total, parts


@register_kd_loss
class HintonKD(KDLoss):
    """Hinton et al. 2015: ``T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))``, averaged over the batch."""

    name = "hinton"

    def __init__(self, temperature: float = 5.0) -> None:
        if temperature <= 0:
            raise ConfigError(f"hinton KD: temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def compute(self, se, sl, te, tl) -> KDTerms:  # noqa: ANN001
        if sl.shape != tl.shape:
            raise ConfigError(f"hinton KD needs student and teacher logits of the same shape, got "
                              f"{tuple(sl.shape)} and {tuple(tl.shape)} (same classes, same scans)")
        t = self.temperature
        kl = F.kl_div(F.log_softmax(sl / t, dim=1), F.log_softmax(tl.detach() / t, dim=1), reduction="batchmean",
                      log_target=True)
        return t * t * kl, {"kl": kl.detach()}


def sp_graph(f: torch.Tensor) -> torch.Tensor:
    """Tung & Mori's similarity matrix: ``F Fᵀ`` with each row L2-normalised (F flattened per sample)."""
    f = f.flatten(1)
    return F.normalize(f @ f.t(), p=2, dim=1, eps=EPS)


@register_kd_loss
class SimilarityPreservingKD(KDLoss):
    """Tung & Mori 2019: ``‖G_s − G_t‖_F² / B²`` on row-normalised ``F Fᵀ`` (times ``weight``)."""

    name = "sp"

    def __init__(self, weight: float = 1.0, min_batch: int = MIN_BATCH) -> None:
        _nonneg(self.name, weight=weight)
        self.weight = weight
        self.min_batch = _min_batch(self.name, min_batch)

    def compute(self, se, sl, te, tl) -> KDTerms:  # noqa: ANN001
        _check_same_batch(se, te)
        b = se.shape[0]
        if b < 2:
            return _zero(se), {"sp": se.new_zeros(())}
        with torch.no_grad():
            gt = sp_graph(te.detach())
        sp = ((sp_graph(se) - gt) ** 2).sum() / (b * b)
        return self.weight * sp, {"sp": sp.detach()}


def rkd_distance_potential(x: torch.Tensor) -> torch.Tensor:
    """Pairwise distances divided by their mean over pairs i ≠ j (B×B, zero diagonal)."""
    d = safe_distances(x)
    b = x.shape[0]
    mean = d.sum() / max(b * (b - 1), 1)
    return d / mean.clamp_min(EPS)


def rkd_angle_potential(x: torch.Tensor, rel_tol: float = 1e-10) -> torch.Tensor:
    """``cos∠(x_j − x_i, x_k − x_i)`` for all triplets (B×B×B); degenerate (zero) vectors give 0.

    Computed in float64 from the Gram matrix ``G`` of the batch-centred rows —
    ``(x_j − x_i)·(x_k − x_i) = G_jk − G_ij − G_ik + G_ii`` — in O(B²D + B³) rather than
    O(B³D). A difference vector counts as zero when its squared norm is ≤ ``rel_tol`` × max_i G_ii.
    """
    xc = x.double() - x.double().mean(dim=0, keepdim=True)
    g = xc @ xc.t()
    n = torch.diagonal(g)
    d2 = n.unsqueeze(0) + n.unsqueeze(1) - 2 * g  # d2[i, j] = ‖x_j − x_i‖²
    ok = d2 > rel_tol * n.max().detach() + 1e-300
    safe = torch.where(ok, d2, torch.ones_like(d2)).sqrt()
    num = g.unsqueeze(0) - g.unsqueeze(2) - g.unsqueeze(1) + n[:, None, None]  # num[i, j, k]
    den = safe.unsqueeze(2) * safe.unsqueeze(1)
    valid = ok.unsqueeze(2) & ok.unsqueeze(1)
    return torch.where(valid, num / den, torch.zeros_like(num)).to(x.dtype)


@register_kd_loss
class RelationalKD(KDLoss):
    """Park et al. 2019: ``w_dist·smoothL1(ψ_D)`` over all B² pairs + ``w_angle·smoothL1(ψ_A)`` over all B³ triplets."""

    name = "rkd"

    def __init__(self, w_dist: float = 25.0, w_angle: float = 50.0, min_batch: int = MIN_BATCH) -> None:
        _nonneg(self.name, w_dist=w_dist, w_angle=w_angle)
        self.w_dist, self.w_angle = w_dist, w_angle
        self.min_batch = _min_batch(self.name, min_batch)

    def compute(self, se, sl, te, tl) -> KDTerms:  # noqa: ANN001
        _check_same_batch(se, te)
        b = se.shape[0]
        zero = se.new_zeros(())
        total, parts = _zero(se), {"distance": zero, "angle": zero}
        if b >= 2 and self.w_dist:
            with torch.no_grad():
                pt = rkd_distance_potential(te.detach())
            dist = F.smooth_l1_loss(rkd_distance_potential(se), pt, reduction="mean", beta=1.0)
            total, parts["distance"] = total + self.w_dist * dist, dist.detach()
        if b >= 3 and self.w_angle:
            with torch.no_grad():
                at = rkd_angle_potential(te.detach())
            angle = F.smooth_l1_loss(rkd_angle_potential(se), at, reduction="mean", beta=1.0)
            total, parts["angle"] = total + self.w_angle * angle, angle.detach()
        return total, parts


