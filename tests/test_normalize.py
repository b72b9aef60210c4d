"""Intensity normalisation: train-only statistics, streaming fit, exact state round-trip."""

from __future__ import annotations

import numpy as np
import pytest

from volkd.data.atlas import mni_grid_affine, occipital_mask
from volkd.data.normalize import NormalizationError, Normalizer, get_normalizer
from volkd.errors import ConfigError


class CountingArray:
    """A read-only N×D×H×W array wrapper that records how many scans each read touches."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr, self.reads = arr, []
        self.shape, self.ndim, self.dtype = arr.shape, arr.ndim, arr.dtype

    def __getitem__(self, idx):
        out = self.arr[idx]
        self.reads.append(out.shape[0] if out.ndim == 4 else 1)
        return out


@pytest.fixture
def vols(tmp_path):
    rng = np.random.default_rng(0)
    v = (rng.normal(size=(20, 8, 8, 8)) * rng.uniform(0.5, 2, size=(1, 8, 8, 8)) + rng.uniform(-3, 3, size=(1, 8, 8, 8)))
    v[:, 0] = 1.0  # a constant slab: sd 0 → floored
    arr = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float32, shape=v.shape)
    arr[:] = v
    arr.flush()
    return np.load(tmp_path / "v.npy", mmap_mode="r")


def test_zscore_matches_numpy_and_streams(vols):
    train = np.arange(0, 20, 2)
    src = CountingArray(vols)
    z = get_normalizer("zscore", min_std=0.05).fit(src, train, chunk=3)
    assert max(src.reads) <= 3  # never more than one chunk in memory
    ref = np.asarray(vols[train], dtype=np.float64)
    mean, sd = ref.mean(0), ref.std(0)
    pooled = np.sqrt(((ref - ref.mean()) ** 2).mean())
    np.testing.assert_allclose(z.mean, mean, rtol=1e-5, atol=1e-6)
    inside = sd > 0.05 * pooled
    np.testing.assert_allclose(z.std[inside], sd[inside], rtol=1e-5)
    assert np.allclose(z.std[~inside], 0.05 * pooled, rtol=1e-5) and (~inside).sum() >= 64
    out = z.transform(np.asarray(vols[train]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 1:].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(out[:, 1:].std(0), 1, rtol=1e-3)
    assert np.all(out[:, 0] == 0)  # constant voxels map to 0, not NaN/Inf


def test_fit_uses_training_scans_only(vols):
    train = np.arange(10)
    z_train = get_normalizer("zscore").fit(vols, train)
    z_all = get_normalizer("zscore").fit(vols, np.arange(20))
    assert not np.allclose(z_train.mean, z_all.mean)
    np.testing.assert_allclose(z_train.mean, np.asarray(vols[:10], dtype=np.float64).mean(0), rtol=1e-5, atol=1e-6)
    g_train = get_normalizer("global_zscore").fit(vols, train)
    g_all = get_normalizer("global_zscore").fit(vols, None)
    assert g_train.mean != pytest.approx(g_all.mean)
    ref = np.asarray(vols[:10], dtype=np.float64)
    assert g_train.mean == pytest.approx(ref.mean(), rel=1e-9)
    assert g_train.std == pytest.approx(ref.std(), rel=1e-9)
    out = g_train.transform(np.asarray(vols[:10]))
    assert out.mean() == pytest.approx(0, abs=1e-5) and out.std() == pytest.approx(1, rel=1e-4)


@pytest.mark.parametrize("name", ["zscore", "global_zscore", "none", "reference"])
def test_state_roundtrip_exact(vols, name):
    kw = {"mask": np.pad(np.ones((2, 2, 2), bool), 3)} if name == "reference" else {}
    n = get_normalizer(name, **kw).fit(np.abs(vols) + 1, np.arange(8))
    state = n.state_dict()
    back = Normalizer.from_state(state)
    assert type(back) is type(n)
    x = np.abs(np.asarray(vols[10:])) + 1
    assert np.array_equal(back.transform(x), n.transform(x))


def test_reference_normalisation_gives_occipital_mean_one():
    grid = (24, 24, 24)
    aff = mni_grid_affine(grid)
    occ = occipital_mask(grid, aff)
    rng = np.random.default_rng(1)
    v = rng.uniform(0.5, 1.5, size=(3, *grid)).astype(np.float32) * np.array([1.0, 4.0, 0.2], np.float32)[:, None, None, None]
    r = get_normalizer("reference", affine=aff)
    out = r.fit(v).transform(v)
    np.testing.assert_allclose(out[:, occ].mean(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out[1] * r.reference_means(v[1:2])[0], v[1], rtol=1e-5)
    # an explicit mask (non-MNI data)
    mask = np.zeros(grid, bool)
    mask[:4, :4, :4] = True
    out = get_normalizer("reference", mask=mask).transform(v)
    np.testing.assert_allclose(out[:, mask].mean(axis=1), 1.0, rtol=1e-5)


def test_reference_nonpositive_names_the_scan():
    grid = (16, 16, 16)
    mask = np.zeros(grid, bool)
    mask[2:5, 2:5, 2:5] = True
    v = np.ones((3, *grid), np.float32)
    v[2, mask] = 0.0
    r = get_normalizer("reference", mask=mask)
    with pytest.raises(NormalizationError, match=r"scan 'B2'.*mean 0 ≤ 0"):
        r.transform(v, scan_ids=["B0", "B1", "B2"])
    with pytest.raises(NormalizationError, match="training scan index 2"):
        r.fit(v, [0, 2])
    with pytest.raises(ConfigError, match="grid"):
        r.transform(np.ones((1, 8, 8, 8), np.float32))
    with pytest.raises(ConfigError, match="space 'unknown', not MNI") as e:
        get_normalizer("reference", space="unknown")
    get_normalizer("reference", space="unknown", mask=mask)  # an explicit mask is fine
    # the hints name options that exist (there is no --normalize flag)
    with pytest.raises(NormalizationError) as e2:
        r.fit(v, [2])
    for err in (e, e2):
        assert "training.extra.normalizer: zscore" in str(err.value) and "--normalizer zscore" in str(err.value)
        assert "--normalize " not in str(err.value)


def test_errors():
    with pytest.raises(ConfigError, match="unknown normalisation 'minmax'"):
        get_normalizer("minmax")
    with pytest.raises(ConfigError, match="bad option"):
        get_normalizer("zscore", foo=1)
    with pytest.raises(ConfigError, match="call fit"):
        get_normalizer("zscore").transform(np.zeros((1, 4, 4, 4), np.float32))
    with pytest.raises(ConfigError, match="no training scans"):
        get_normalizer("zscore").fit(np.zeros((2, 4, 4, 4), np.float32), [])
    z = get_normalizer("zscore").fit(np.random.default_rng(0).normal(size=(3, 4, 4, 4)).astype(np.float32))
    with pytest.raises(ConfigError, match="fitted on grid"):
        z.transform(np.zeros((1, 5, 5, 5), np.float32))
    with pytest.raises(ConfigError, match="missing key 'std'"):
        Normalizer.from_state({"name": "zscore", "min_std": 0.05, "mean": np.zeros((2, 2, 2))})
    with pytest.raises(ConfigError, match="unknown name"):
        Normalizer.from_state({"name": "nope"})
