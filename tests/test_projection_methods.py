"""Projection methods against loop reference implementations, and their properties."""

from __future__ import annotations

import numpy as np
import pytest

from volkd.projection import ProjectionSpec, orient, project, rank_pool_weights, unorient
from volkd.projection.methods import METHODS, quantize_uint8

GRID = (10, 12, 14)  # non-cubic so that a wrong axis shows up as a wrong shape
AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
REF = {"sagittal": 4, "coronal": 6, "axial": 7}


def _vols(n: int = 3, seed: int = 0, grid: tuple[int, int, int] = GRID) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, 1.5, size=(n,) + grid).astype(np.float32)


def _run(vols: np.ndarray, method: str, view: str, **kw: object) -> np.ndarray:
    """project() on one view, returned in volume-axis order (n, C, U, V)."""
    spec = ProjectionSpec(method=method, views=[view], ref_index=REF, **kw)
    return unorient(project(vols, spec))


# ------------------------------------------------------------------ loop references
def ref_entropy(vol: np.ndarray, axis: int) -> np.ndarray:
    lo, hi = vol.min(), vol.max()
    scale = np.float32(256) / (hi - lo)
    weights, slices = [], []
    for t in range(vol.shape[axis]):
        s = np.take(vol, t, axis=axis)
        q = np.minimum(np.floor((s - lo) * scale), 255).astype(np.uint8)
        _, counts = np.unique(q, return_counts=True)
        p = counts / counts.sum()
        weights.append(float(-(p * np.log2(p)).sum()))
        slices.append(s.astype(np.float64))
    w = np.array(weights)
    return sum(wi * si for wi, si in zip(w, slices)) / w.sum()


def ref_alpha(t_len: int) -> np.ndarray:
    return np.array([sum((2 * i - t_len - 1) / i for i in range(t, t_len + 1)) for t in range(1, t_len + 1)])


def ref_dynamic(vol: np.ndarray, axis: int, minmax: bool) -> np.ndarray:
    alpha = ref_alpha(vol.shape[axis])
    img = np.zeros(np.take(vol, 0, axis=axis).shape)
    for t in range(vol.shape[axis]):
        img += alpha[t] * np.take(vol, t, axis=axis).astype(np.float64)
    if minmax:
        img = (img - img.min()) / (img.max() - img.min())
    return img


def ref_loop(vol: np.ndarray, method: str, axis: int, ref: int, eps: int = 1) -> np.ndarray:
    sl = [np.take(vol, t, axis=axis).astype(np.float64) for t in range(vol.shape[axis])]
    if method == "slice":
        return sl[ref][None]
    if method == "slices":
        return np.stack([sl[t] for t in range(ref - eps, ref + eps + 1)])
    if method == "mip":
        out = sl[0].copy()
        for s in sl[1:]:
            out = np.maximum(out, s)
        return out[None]
    if method == "mean":
        return (sum(sl) / len(sl))[None]
    if method == "std":
        m = sum(sl) / len(sl)
        return np.sqrt(sum((s - m) ** 2 for s in sl) / len(sl))[None]
    if method == "entropy":
        return ref_entropy(vol, axis)[None]
    if method == "dynamic":
        return ref_dynamic(vol, axis, True)[None]
    raise AssertionError(method)


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("view", list(AXES))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_matches_loop_reference(method: str, view: str) -> None:
    vols = _vols(seed=hash((method, view)) % 1000)
    got = _run(vols, method, view, epsilon=2)
    want = np.stack([ref_loop(v, method, AXES[view], REF[view], eps=2) for v in vols])
    assert got.dtype == np.float32
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_unscaled_dynamic_matches_loop() -> None:
    vols = _vols(seed=5)
    got = _run(vols, "dynamic", "coronal", dynamic_minmax=False)
    want = np.stack([ref_dynamic(v, 1, False)[None] for v in vols])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("t_len", [1, 2, 3, 7, 64, 91])
def test_dynamic_weights_match_closed_form(t_len: int) -> None:
    t = np.arange(1, t_len + 1)
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, t_len + 1))])  # H_0 … H_T
    closed = 2 * (t_len - t + 1) - (t_len + 1) * (harmonic[t_len] - harmonic[t - 1])
    alpha = rank_pool_weights(t_len)
    np.testing.assert_allclose(alpha, closed, atol=1e-9)
    np.testing.assert_allclose(alpha, ref_alpha(t_len), atol=1e-9)
    assert abs(alpha.sum()) < 1e-9
    if t_len > 1:  # the first slice weighs negatively, the last positively: the ranking direction
        assert alpha[0] == alpha.min() < 0 < alpha[-1]


@pytest.mark.parametrize("view", list(AXES))
def test_constant_along_axis_gives_that_slice(view: str) -> None:
    axis = AXES[view]
    rng = np.random.default_rng(1)
    plane_shape = [2] + [g for i, g in enumerate(GRID) if i != axis]
    plane = rng.normal(size=plane_shape).astype(np.float32)
    vols = np.ascontiguousarray(np.repeat(np.expand_dims(plane, axis + 1), GRID[axis], axis=axis + 1))
    for method in ("slice", "mean", "mip", "entropy"):
        np.testing.assert_allclose(_run(vols, method, view)[:, 0], plane, rtol=1e-5, atol=1e-5, err_msg=method)
    np.testing.assert_allclose(_run(vols, "std", view)[:, 0], 0, atol=1e-5)
    np.testing.assert_allclose(_run(vols, "dynamic", view, dynamic_minmax=False), 0, atol=1e-4)
    np.testing.assert_array_equal(_run(vols, "dynamic", view), 0)  # scaled: zero span → zeros


def test_constant_volume_entropy_falls_back_to_mean() -> None:
    vols = np.full((1,) + GRID, 3.5, dtype=np.float32)
    np.testing.assert_allclose(_run(vols, "entropy", "axial"), 3.5)
    assert quantize_uint8(vols).max() == 0


def test_quantisation_range_is_per_volume_min_max() -> None:
    vols = np.stack([np.linspace(0, 1, 1000), np.linspace(-50, 150, 1000)]).reshape(2, 10, 10, 10).astype(np.float32)
    q = quantize_uint8(vols)
    for i in range(2):
        assert q[i].min() == 0 and q[i].max() == 255
        counts = np.bincount(q[i].ravel(), minlength=256)
        assert counts.min() >= 3 and counts.max() <= 5  # uniform ramp → near-equal bins


@pytest.mark.parametrize("perm", [(2, 1, 0), (1, 0, 2), (0, 2, 1), (1, 2, 0)])
@pytest.mark.parametrize("method", ["mean", "mip", "std", "entropy", "dynamic"])
def test_permuting_axes_permutes_views(perm: tuple[int, int, int], method: str) -> None:
    vols = _vols(n=2, seed=3)
    permuted = np.ascontiguousarray(vols.transpose((0,) + tuple(p + 1 for p in perm)))
    names = {0: "sagittal", 1: "coronal", 2: "axial"}
    for new_axis, old_axis in enumerate(perm):
        got = _run(permuted, method, names[new_axis])[:, 0]
        want = _run(vols, method, names[old_axis])[:, 0]
        # the two remaining axes keep their relative order unless the permutation swaps them
        rest_new = [perm[a] for a in range(3) if a != new_axis]
        if rest_new[0] > rest_new[1]:
            want = np.swapaxes(want, -1, -2)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_display_orientation() -> None:
    """Axial: anterior up, left on the left; coronal and sagittal: superior up."""
    vol = np.zeros((1, 8, 10, 12), dtype=np.float32)
    vol[0, 1, 8, 3] = 1.0  # left (x=1), anterior (y=8), inferior (z=3)
    axial = project(vol, ProjectionSpec(method="mip", views=["axial"]))[0, 0]
    assert axial.shape == (10, 8)
    assert np.argwhere(axial == 1).tolist() == [[10 - 1 - 8, 1]]  # near the top, on the left
    coronal = project(vol, ProjectionSpec(method="mip", views=["coronal"]))[0, 0]
    assert coronal.shape == (12, 8)
    assert np.argwhere(coronal == 1).tolist() == [[12 - 1 - 3, 1]]  # lower half (inferior)
    sagittal = project(vol, ProjectionSpec(method="mip", views=["sagittal"]))[0, 0]
    assert sagittal.shape == (12, 10)
    assert np.argwhere(sagittal == 1).tolist() == [[12 - 1 - 3, 8]]  # anterior on the right
    np.testing.assert_array_equal(unorient(orient(vol[0])), vol[0])


def test_entropy_with_many_slices_uses_wide_keys() -> None:
    """T·257 > 65535 slices' bins no longer fit uint16 keys: the intp path must agree with the loop."""
    vols = _vols(n=2, seed=9, grid=(3, 4, 300))
    got = unorient(project(vols, ProjectionSpec(method="entropy", views=["axial"])))
    want = np.stack([ref_entropy(v, 2)[None] for v in vols])
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_slice_entropies_match_quantised_histograms() -> None:
    from volkd.projection.methods import slice_entropies

    vols = _vols(n=2, seed=4)
    q = quantize_uint8(vols)
    for axis in range(3):
        h = slice_entropies(vols, axis)
        for n in range(2):
            for t in range(vols.shape[axis + 1]):
                counts = np.bincount(np.take(q[n], t, axis=axis).ravel(), minlength=256)
                p = counts[counts > 0] / counts.sum()
                assert h[n, t] == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-9)
