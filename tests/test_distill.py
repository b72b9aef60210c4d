"""KD losses: values against explicit numpy loops, invariances, tiny batches, NaN safety, registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hypothesis import given, settings
from hypothesis import strategies as st

from volkd.distill import (
    AFFINITIES,
    combine,
    feature_graph_loss,
    get_kd_loss,
    graph_affinity,
    kd_loss_names,
    knn_affinity,
    logit_graph_loss,
    metric_loss,
    rbf_affinity,
)
from volkd.errors import ConfigError

RELATIONAL = ["graph", "sp", "rkd"]


def _t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


@pytest.fixture
def batch() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 7)), rng.normal(size=(5, 3)), rng.normal(size=(5, 2)), rng.normal(size=(5, 2))


# ---------- reference implementations with explicit loops ----------

def np_cosine_graph(x: np.ndarray) -> np.ndarray:
    b = len(x)
    a = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            a[i, j] = sum(x[i, d] * x[j, d] for d in range(x.shape[1])) / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))
    return a / a.max()


def np_dist(x: np.ndarray) -> np.ndarray:
    b = len(x)
    return np.array([[math.sqrt(sum((x[i, d] - x[j, d]) ** 2 for d in range(x.shape[1]))) for j in range(b)] for i in range(b)])


def np_sigma(x: np.ndarray, k: int) -> float:
    d = np_dist(x)
    return float(np.mean([sorted(d[i, j] for j in range(len(x)) if j != i)[k - 1] for i in range(len(x))]))


def np_rbf_graph(x: np.ndarray, k: int, order: int | None = None) -> np.ndarray:
    d, s = np_dist(x), np_sigma(x, k)
    u = d**2 / (2 * s * s)
    a = np.exp(-u) if order is None else 1.0 / sum(u ** n / math.factorial(n) for n in range(order + 1))
    return a / a.max()


def np_log_softmax(z: np.ndarray, t: float) -> np.ndarray:
    out = np.zeros_like(z)
    for i in range(len(z)):
        e = [math.exp(v / t) for v in z[i]]
        out[i] = [math.log(v / sum(e)) for v in e]
    return out


def huber(a: float, b: float) -> float:
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


# ---------- affinities ----------

def test_cosine_graph_matches_loops(batch) -> None:
    x = batch[0]
    np.testing.assert_allclose(graph_affinity(_t(x)).numpy(), np_cosine_graph(x), rtol=1e-10)


def test_knn_graph_by_hand() -> None:
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    expected = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=float)
    np.testing.assert_array_equal(knn_affinity(_t(x), k=1).numpy(), expected)
    # k is clipped to B − 1: everybody is everybody's neighbour
    np.testing.assert_array_equal(knn_affinity(_t(x), k=10).numpy(), np.ones((4, 4)))


def test_knn_graph_is_the_cosine_graph_on_knn_edges(batch) -> None:
    x = batch[0]
    own = knn_affinity(_t(x), k=2).numpy()
    cos = np_cosine_graph(x) * np_cosine_graph(x).max()  # un-normalised cosine
    want = own * cos
    np.testing.assert_allclose(graph_affinity(_t(x), "knn", k=2).numpy(), want / want.max(), rtol=1e-10)
    # another mask (e.g. the teacher's) replaces the own edges
    other = np.eye(5) + np.eye(5, k=1)
    want = other * cos
    np.testing.assert_allclose(graph_affinity(_t(x), "knn", mask=_t(other)).numpy(), want / want.max(), rtol=1e-10)
    with pytest.raises(ConfigError, match="mask applies to the 'knn' affinity only"):
        graph_affinity(_t(x), "cosine", mask=_t(other))
    with pytest.raises(ConfigError, match=r"knn mask must be 5×5"):
        graph_affinity(_t(x), "knn", mask=torch.ones(4, 4))


def test_graph_knn_loss_uses_the_teachers_neighbourhoods(batch) -> None:
    """L_fg with knn: student and teacher cosine graphs, both on the TEACHER's kNN edges."""
    fs, ft, zs, zt = batch
    mask = knn_affinity(_t(ft), k=2).numpy()
    gs = mask * np_cosine_graph(fs) * np_cosine_graph(fs).max()
    gt = mask * np_cosine_graph(ft) * np_cosine_graph(ft).max()
    fg = np.mean((gs / gs.max() - gt / gt.max()) ** 2)
    metric = np.mean((gs / gs.max() - np.eye(5)) ** 2)
    _, parts = get_kd_loss("graph", affinity="knn", k=2, w_lg=0.0, w_metric=1.0)(_t(fs), _t(zs), _t(ft), _t(zt))
    assert parts["fg"] == pytest.approx(fg, rel=1e-10) and parts["fg"] > 0
    assert parts["metric"] == pytest.approx(metric, rel=1e-10)
    assert feature_graph_loss(_t(fs), _t(ft), "knn", k=2).item() == pytest.approx(fg, rel=1e-10)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_rbf_graph_matches_loops(batch, k: int) -> None:
    x = batch[0]
    np.testing.assert_allclose(graph_affinity(_t(x), "rbf", k=k).numpy(), np_rbf_graph(x, k), rtol=1e-10)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_rbf_taylor_graph_matches_loops(batch, order: int) -> None:
    x = batch[0]
    got = graph_affinity(_t(x), "rbf_taylor", k=2, order=order).numpy()
    np.testing.assert_allclose(got, np_rbf_graph(x, 2, order), rtol=1e-10)


def test_rbf_taylor_converges_to_rbf(batch) -> None:
    x = batch[0]
    rbf = graph_affinity(_t(x), "rbf", k=4)
    assert (graph_affinity(_t(x), "rbf_taylor", k=4, order=30) - rbf).abs().max() < 1e-6
    assert (graph_affinity(_t(x), "rbf_taylor", k=4, order=2) - rbf).abs().max() > 1e-3


@settings(max_examples=60, deadline=None)
@given(b=st.integers(3, 12), d=st.integers(1, 16), order=st.integers(1, 6), k=st.integers(1, 6),
       scale=st.floats(0.01, 100.0), seed=st.integers(0, 2**31 - 1))
def test_rbf_taylor_is_positive_and_decreases_with_distance(b: int, d: int, order: int, k: int, scale: float, seed: int) -> None:
    """Property: within a batch, the affinity is a positive, non-increasing function of the distance
    (the old series 1 − u + u²/2 rose again for u > 1, i.e. for most pairs of real embeddings)."""
    x = torch.tensor(np.random.default_rng(seed).normal(size=(b, d)) * scale, dtype=torch.float64)
    g = graph_affinity(x, "rbf_taylor", k=k, order=order)
    dist = torch.cdist(x, x)
    assert (g > 0).all() and g.max().item() == pytest.approx(1.0)
    pairs = torch.argsort(dist.flatten())
    a = g.flatten()[pairs]
    dd = dist.flatten()[pairs]
    rises = (a[1:] - a[:-1] > 1e-12) & (dd[1:] - dd[:-1] > 1e-9 * scale)
    assert not rises.any()


def test_rbf_taylor_values_far_apart() -> None:
    """u = 4: exp(−4) = 0.018; order 2 gives 1/(1 + 4 + 8) = 0.077 (the old series gave 1 − 4 + 8 = 5)."""
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)  # σ (k = 1) = mean(1, 1, 2) = 4/3
    g = rbf_affinity(x, k=1, order=2)
    u = (torch.cdist(x, x) ** 2) / (2 * (4 / 3) ** 2)
    np.testing.assert_allclose(g.numpy(), (1 / (1 + u + u * u / 2)).numpy(), rtol=1e-12)
    assert g[0, 2] < g[0, 1] < g[0, 0] == 1.0


def test_unknown_affinity() -> None:
    with pytest.raises(ConfigError, match="unknown graph affinity 'l1'; choose one of cosine, knn, rbf, rbf_taylor"):
        graph_affinity(torch.ones(3, 2), "l1")
    with pytest.raises(ConfigError, match="unknown affinity 'l1'"):
        get_kd_loss("graph", affinity="l1")


# ---------- the study's graph loss ----------

def test_graph_terms_match_loops(batch) -> None:
    fs, ft, zs, zt = batch
    gs, gt = np_cosine_graph(fs), np_cosine_graph(ft)
    fg = np.mean([(gs[i, j] - gt[i, j]) ** 2 for i in range(5) for j in range(5)])
    ls, lt = np_cosine_graph(np_log_softmax(zs, 5.0)), np_cosine_graph(np_log_softmax(zt, 5.0))
    lg = np.mean([(ls[i, j] - lt[i, j]) ** 2 for i in range(5) for j in range(5)])
    metric = np.mean([(gs[i, j] - (i == j)) ** 2 for i in range(5) for j in range(5)])
    assert feature_graph_loss(_t(fs), _t(ft)).item() == pytest.approx(fg, rel=1e-10)
    assert logit_graph_loss(_t(zs), _t(zt), 5.0).item() == pytest.approx(lg, rel=1e-10)
    assert metric_loss(_t(fs)).item() == pytest.approx(metric, rel=1e-10)
    total, parts = get_kd_loss("graph", w_fg=2.0, w_lg=3.0, w_metric=0.5)(_t(fs), _t(zs), _t(ft), _t(zt))
    assert total.item() == pytest.approx(2 * fg + 3 * lg + 0.5 * metric, rel=1e-10)
    assert parts == pytest.approx({"fg": fg, "lg": lg, "metric": metric, "kd": total.item()})


def test_graph_ablation_switches_terms_off(batch) -> None:
    fs, ft, zs, zt = (_t(a) for a in batch)
    full, p = get_kd_loss("graph")(fs, zs, ft, zt)
    fg_only, q = get_kd_loss("graph", w_lg=0.0)(fs, zs, ft, zt)
    assert "lg" not in q and set(q) == {"fg", "metric", "kd"}
    assert fg_only.item() == pytest.approx(p["fg"] + 0.2 * p["metric"])
    assert full.item() == pytest.approx(p["fg"] + p["lg"] + 0.2 * p["metric"])


@pytest.mark.parametrize("affinity", AFFINITIES)
def test_graph_loss_gradient_flows_to_student_only(batch, affinity: str) -> None:
    fs, ft, zs, zt = _t(batch[0], True), _t(batch[1], True), _t(batch[2], True), _t(batch[3], True)
    total, _ = get_kd_loss("graph", affinity=affinity, k=2)(fs, zs, ft, zt)
    total.backward()
    assert ft.grad is None and zt.grad is None  # frozen teacher
    assert torch.isfinite(fs.grad).all() and torch.isfinite(zs.grad).all()
    # every affinity teaches (knn: the cosine graph on the teacher's kNN edges, not the binary mask)
    assert fs.grad.abs().sum() > 0 and zs.grad.abs().sum() > 0


def test_combine_is_the_documented_objective() -> None:
    ce, kd = torch.tensor(0.7), torch.tensor(0.3)
    assert combine(ce, kd, w_cls=1.0, w_kd=5.0).item() == pytest.approx(0.7 + 1.5)
    # METHOD.md: w_cls·CE + w_kd·(L_fg + L_lg) + L_metric  ⇔  w_metric = 1 / w_kd (default 0.2 for w_kd = 5)
    rng = np.random.default_rng(1)
    fs, ft, zs, zt = (_t(rng.normal(size=(6, d))) for d in (4, 9, 2, 2))
    total, p = get_kd_loss("graph")(fs, zs, ft, zt)
    assert combine(ce, total, 1.0, 5.0).item() == pytest.approx(0.7 + 5 * (p["fg"] + p["lg"]) + p["metric"])


# ---------- baselines ----------

def test_hinton_matches_loops(batch) -> None:
    _, _, zs, zt = batch
    t = 4.0
    kl = 0.0
    for i in range(5):
        ps = np.exp(np_log_softmax(zs, t)[i])
        pt = np.exp(np_log_softmax(zt, t)[i])
        kl += sum(pt[c] * math.log(pt[c] / ps[c]) for c in range(2))
    total, parts = get_kd_loss("hinton", temperature=t)(_t(batch[0]), _t(zs), _t(batch[1]), _t(zt))
    assert total.item() == pytest.approx(t * t * kl / 5, rel=1e-10)
    assert parts["kl"] == pytest.approx(kl / 5, rel=1e-10)


def test_hinton_by_hand_and_zero_when_equal() -> None:
    # T = 1, one scan: p_t = (0.5, 0.5), p_s = softmax(0, ln 3) = (0.25, 0.75)
    zs, zt = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[0.0, 0.0]])
    total, _ = get_kd_loss("hinton", temperature=1.0)(torch.zeros(1, 2), zs, torch.zeros(1, 2), zt)
    assert total.item() == pytest.approx(0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75), rel=1e-6)
    z = torch.randn(4, 3, requires_grad=True)
    total, _ = get_kd_loss("hinton")(torch.zeros(4, 2), z, torch.zeros(4, 2), z.detach().clone())
    assert total.item() == pytest.approx(0.0, abs=1e-7)
    total.backward()
    assert z.grad.abs().max() < 1e-6


def test_hinton_needs_same_classes() -> None:
    with pytest.raises(ConfigError, match=r"same shape, got \(2, 2\) and \(2, 3\)"):
        get_kd_loss("hinton")(torch.zeros(2, 4), torch.zeros(2, 2), torch.zeros(2, 4), torch.zeros(2, 3))


def np_sp(fs: np.ndarray, ft: np.ndarray) -> float:
    def g(f: np.ndarray) -> np.ndarray:
        m = np.array([[sum(f[i, d] * f[j, d] for d in range(f.shape[1])) for j in range(len(f))] for i in range(len(f))])
        return np.array([row / math.sqrt(sum(v * v for v in row)) for row in m])
    gs, gt = g(fs), g(ft)
    b = len(fs)
    return sum((gs[i, j] - gt[i, j]) ** 2 for i in range(b) for j in range(b)) / b**2


def test_sp_matches_loops(batch) -> None:
    fs, ft, zs, zt = batch
    total, parts = get_kd_loss("sp")(_t(fs), _t(zs), _t(ft), _t(zt))
    assert total.item() == pytest.approx(np_sp(fs, ft), rel=1e-10)
    assert parts["sp"] == pytest.approx(total.item())


def np_rkd(fs: np.ndarray, ft: np.ndarray) -> tuple[float, float]:
    b = len(fs)

    def psi_d(f: np.ndarray) -> np.ndarray:
        d = np_dist(f)
        mu = sum(d[i, j] for i in range(b) for j in range(b) if i != j) / (b * (b - 1))
        return d / mu

    def psi_a(f: np.ndarray) -> np.ndarray:
        a = np.zeros((b, b, b))
        for i in range(b):
            for j in range(b):
                for k in range(b):
                    u, v = f[j] - f[i], f[k] - f[i]
                    if np.linalg.norm(u) > 0 and np.linalg.norm(v) > 0:
                        a[i, j, k] = float(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v))
        return a

    ds, dt, as_, at = psi_d(fs), psi_d(ft), psi_a(fs), psi_a(ft)
    dist = np.mean([huber(ds[i, j], dt[i, j]) for i in range(b) for j in range(b)])
    angle = np.mean([huber(as_[i, j, k], at[i, j, k]) for i in range(b) for j in range(b) for k in range(b)])
    return dist, angle


def test_rkd_matches_loops(batch) -> None:
    fs, ft, zs, zt = batch
    dist, angle = np_rkd(fs, ft)  # with this batch some angle residuals exceed the Huber knee (1)
    total, parts = get_kd_loss("rkd")(_t(fs), _t(zs), _t(ft), _t(zt))
    # distances are normalised by their mean: scaling the student changes nothing
    assert get_kd_loss("rkd")(_t(3 * fs), _t(zs), _t(ft), _t(zt))[0].item() == pytest.approx(total.item(), rel=1e-10)
    assert parts["distance"] == pytest.approx(dist, rel=1e-10)
    assert parts["angle"] == pytest.approx(angle, rel=1e-10)
    assert total.item() == pytest.approx(25 * dist + 50 * angle, rel=1e-10)


# ---------- invariances, dimensions, tiny batches, degenerate inputs ----------

def test_rkd_with_duplicate_scans_matches_loops(batch) -> None:
    fs, ft, zs, zt = batch
    fs, ft = fs.copy(), ft.copy()
    fs[3], ft[1] = fs[0], ft[4]  # coincident points: their difference vectors are degenerate (cos = 0)
    dist, angle = np_rkd(fs, ft)
    _, parts = get_kd_loss("rkd")(_t(fs), _t(zs), _t(ft), _t(zt))
    assert parts["distance"] == pytest.approx(dist, rel=1e-9)
    assert parts["angle"] == pytest.approx(angle, rel=1e-9)
    # float32 path agrees with the float64 reference
    _, parts32 = get_kd_loss("rkd")(torch.tensor(fs, dtype=torch.float32), torch.tensor(zs), torch.tensor(ft, dtype=torch.float32), torch.tensor(zt))
    assert parts32["angle"] == pytest.approx(angle, rel=1e-5)
    assert parts32["distance"] == pytest.approx(dist, rel=1e-4)


def test_dimension_mismatch_512_vs_1536() -> None:
    torch.manual_seed(0)
    fs, ft = torch.randn(8, 1536, requires_grad=True), torch.randn(8, 512)
    zs, zt = torch.randn(8, 2, requires_grad=True), torch.randn(8, 2)
    for name in kd_loss_names():
        total, _ = get_kd_loss(name)(fs, zs, ft, zt)
        assert total.ndim == 0 and torch.isfinite(total)


@pytest.mark.parametrize("name,params", [("graph", {}), ("graph", {"affinity": "rbf"}), ("graph", {"affinity": "knn", "k": 2}),
                                         ("graph", {"affinity": "rbf_taylor"}), ("sp", {}), ("rkd", {})])
def test_invariant_to_teacher_zero_padding_and_rotation(name: str, params: dict) -> None:
    torch.manual_seed(0)
    fs, ft = torch.randn(8, 24, dtype=torch.float64), torch.randn(8, 16, dtype=torch.float64)
    zs, zt = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    loss = get_kd_loss(name, **params)
    ref = loss(fs, zs, ft, zt)[0].item()
    padded = torch.cat([ft, torch.zeros(8, 496, dtype=torch.float64)], dim=1)  # 512-d teacher
    q, _ = torch.linalg.qr(torch.randn(512, 512, dtype=torch.float64))
    assert loss(fs, zs, padded, zt)[0].item() == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert loss(fs, zs, padded @ q, zt)[0].item() == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert ref > 0


@pytest.mark.parametrize("name", RELATIONAL)
def test_batch_of_one_is_zero_and_backward_safe(name: str) -> None:
    fs, zs = torch.randn(1, 6, requires_grad=True), torch.randn(1, 2, requires_grad=True)
    total, parts = get_kd_loss(name)(fs, zs, torch.randn(1, 4), torch.randn(1, 2))
    assert total.item() == 0.0 and all(v == 0.0 for v in parts.values())
    total.backward()
    assert torch.equal(fs.grad, torch.zeros_like(fs))


def test_batch_of_two() -> None:
    torch.manual_seed(0)
    fs, ft, zs, zt = torch.randn(2, 6), torch.randn(2, 4), torch.randn(2, 2), torch.randn(2, 2)
    total, parts = get_kd_loss("rkd")(fs, zs, ft, zt)
    # B = 2: both normalised distances are 1 → no distance loss; the angle term needs B ≥ 3
    assert parts["angle"] == 0.0 and parts["distance"] == pytest.approx(0.0, abs=1e-7)
    graph, gparts = get_kd_loss("graph")(fs, zs, ft, zt)
    assert torch.isfinite(graph) and gparts["fg"] > 0
    assert torch.isfinite(get_kd_loss("sp")(fs, zs, ft, zt)[0])


@pytest.mark.parametrize("kind", ["identical", "zero"])
@pytest.mark.parametrize("name,params", [("graph", {"affinity": a}) for a in AFFINITIES] + [("sp", {}), ("rkd", {}), ("hinton", {}), ("none", {})])
def test_no_nan_for_degenerate_embeddings(kind: str, name: str, params: dict) -> None:
    row = torch.randn(1, 6)
    base = row.repeat(5, 1) if kind == "identical" else torch.zeros(5, 6)
    fs = base.clone().requires_grad_(True)
    zs = (base[:, :2].clone()).requires_grad_(True)
    for teacher in (base[:, :4].clone(), torch.randn(5, 4)):
        fs.grad = zs.grad = None
        total, parts = get_kd_loss(name, **params)(fs, zs, teacher, base[:, :2].clone())
        (total + fs.sum() * 0 + zs.sum() * 0).backward()
        assert math.isfinite(total.item()) and all(math.isfinite(v) for v in parts.values())
        assert torch.isfinite(fs.grad).all() and torch.isfinite(zs.grad).all()


def test_none_is_zero_and_needs_no_teacher() -> None:
    loss = get_kd_loss("none")
    assert not loss.requires_teacher
    total, parts = loss(torch.randn(3, 4), torch.randn(3, 2), None, None)
    assert total.item() == 0.0 and parts == {"kd": 0.0}
    with pytest.raises(ConfigError, match="'graph' needs the teacher"):
        get_kd_loss("graph")(torch.randn(3, 4), torch.randn(3, 2), None, None)


def test_batch_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"student batch \(4\) and teacher batch \(3\) differ"):
        get_kd_loss("sp")(torch.randn(4, 4), torch.randn(4, 2), torch.randn(3, 4), torch.randn(3, 2))


# ---------- registry ----------

def test_registry_names_and_errors() -> None:
    assert kd_loss_names() == ["none", "graph", "hinton", "sp", "rkd"]
    with pytest.raises(ConfigError, match="unknown KD loss 'fitnet'; choose one of none, graph, hinton, sp, rkd"):
        get_kd_loss("fitnet")
    with pytest.raises(ConfigError, match="KD loss 'graph' has no parameter.s. tau; accepted: affinity, w_fg"):
        get_kd_loss("graph", tau=2)
    with pytest.raises(ConfigError, match="w_fg must be ≥ 0"):
        get_kd_loss("graph", w_fg=-1)


def test_to_dict_round_trip() -> None:
    loss = get_kd_loss("graph", affinity="rbf", w_lg=0.0, temperature=3.0)
    d = loss.to_dict()
    assert d == {"name": "graph", "affinity": "rbf", "w_fg": 1.0, "w_lg": 0.0, "w_metric": 0.2,
                 "temperature": 3.0, "k": 5, "order": 2, "min_batch": 8}
    assert get_kd_loss(**d).to_dict() == d


# ---------- relational batches (min_batch) ----------

@pytest.mark.parametrize("name", RELATIONAL)
def test_relational_losses_have_a_min_batch(name: str) -> None:
    loss = get_kd_loss(name)
    assert loss.min_batch == 8 and not loss.applies(7) and loss.applies(8)
    small = get_kd_loss(name, min_batch=2)
    assert small.applies(2) and small.to_dict()["min_batch"] == 2
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ConfigError, match="min_batch must be an integer ≥ 2"):
            get_kd_loss(name, min_batch=bad)
    assert get_kd_loss("hinton").applies(1)  # not relational: any batch


@pytest.mark.parametrize("name", kd_loss_names())
def test_terms_are_tensors_and_match_the_float_parts(name: str) -> None:
    torch.manual_seed(1)
    fs, ft, zs, zt = torch.randn(9, 6), torch.randn(9, 4), torch.randn(9, 2), torch.randn(9, 2)
    loss = get_kd_loss(name)
    total, terms = loss.terms(fs, zs, ft, zt)
    _, parts = loss(fs, zs, ft, zt)
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad for v in terms.values())
    assert {k: float(v) for k, v in terms.items()} == {k: v for k, v in parts.items() if k != "kd"}
    assert parts["kd"] == float(total)
