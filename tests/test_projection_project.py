"""project(): fusion layouts, exact FuseMe slices, resizing, masking, chunking; reference slices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volkd.data import atlas
from volkd.data.cohort import Cohort, CohortMeta
from volkd.errors import ConfigError
from volkd.projection import ProjectionSpec, preset, project, resize_images, resolve_reference, unorient

GRID = (12, 14, 16)
REF = {"sagittal": 5, "coronal": 6, "axial": 9}


def _vols(n: int = 4, grid: tuple[int, int, int] = GRID, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n,) + grid).astype(np.float32)


def test_fuseme_uses_all_nine_slices_exactly() -> None:
    vols = _vols(grid=(16, 16, 16))
    spec = preset("fuseme", ref_mode="midline", ref_index=REF)
    out = project(vols, spec)
    assert out.shape == (4, 3, 3, 16, 16) and out.dtype == np.float32
    for n in range(4):
        for k, d in enumerate((-1, 0, 1)):
            # displayed images: rows = later remaining axis reversed, cols = earlier remaining axis
            np.testing.assert_array_equal(out[n, 0, k], vols[n, :, :, REF["axial"] + d].T[::-1])
            np.testing.assert_array_equal(out[n, 1, k], vols[n, :, REF["coronal"] + d, :].T[::-1])
            np.testing.assert_array_equal(out[n, 2, k], vols[n, REF["sagittal"] + d, :, :].T[::-1])
    # the coronal and sagittal channels are not copies of the axial ones (the reference code's defect)
    assert not np.allclose(out[:, 1], out[:, 0]) and not np.allclose(out[:, 2], out[:, 0])
    # the default FuseMe: per hemisphere, twelve slices, sagittal ones around each striatum's reference
    hemi = project(vols, preset("fuseme", ref_index={**REF, "sagittal_L": 4, "sagittal_R": 11}))
    assert hemi.shape == (4, 4, 3, 16, 16)
    np.testing.assert_array_equal(hemi[:, :2], out[:, :2])
    for k, d in enumerate((-1, 0, 1)):
        np.testing.assert_array_equal(hemi[:, 2, k], vols[:, 4 + d].swapaxes(-1, -2)[:, ::-1])
        np.testing.assert_array_equal(hemi[:, 3, k], vols[:, 11 + d].swapaxes(-1, -2)[:, ::-1])


def test_fuseme_on_non_cubic_grid_resizes_views_to_common_size() -> None:
    vols = _vols()
    out = project(vols, preset("fuseme", ref_mode="midline", ref_index=REF))
    assert out.shape == (4, 3, 3, 16, 14)  # axial 14×12, coronal 16×12, sagittal 16×14 → largest rows × cols
    coronal = np.stack([vols[:, :, REF["coronal"] + d, :] for d in (-1, 0, 1)], axis=1)
    np.testing.assert_array_equal(out[:, 1], resize_images(coronal.transpose(0, 1, 3, 2)[..., ::-1, :], (16, 14)))
    sagittal = np.stack([vols[:, REF["sagittal"] + d] for d in (-1, 0, 1)], axis=1)
    np.testing.assert_array_equal(out[:, 2], sagittal.transpose(0, 1, 3, 2)[..., ::-1, :])  # already 16×14
    assert not np.allclose(out[:, 1, 1, :, 0], out[:, 1, 1, :, 1])  # genuinely interpolated, not padded


def test_early_fusion_stacks_views_as_channels() -> None:
    vols = _vols()
    spec = preset("early", method="slices", epsilon=1, ref_index=REF, out_size=(16, 16))
    out = project(vols, spec)
    assert out.shape == (4, 9, 16, 16) and spec.in_channels == 9
    for v, view in enumerate(spec.views):
        single = project(vols, ProjectionSpec(method="slices", views=[view], ref_index=REF, out_size=(16, 16)))
        np.testing.assert_array_equal(out[:, 3 * v:3 * v + 3], single)
    joint = project(vols, preset("joint", method="slices", ref_mode="midline", ref_index=REF, out_size=(16, 16)))
    np.testing.assert_array_equal(joint.reshape(out.shape), out)


def test_resize_is_antialiased_bilinear() -> None:
    img = np.zeros((1, 1, 8, 8), dtype=np.float32)
    img[..., ::2] = 1.0  # stripes: plain subsampling would alias to all-ones or all-zeros
    small = resize_images(img, (4, 4))
    np.testing.assert_allclose(small[..., 1:3], 0.5, atol=1e-6)  # interior: the stripes' average
    assert np.all(np.abs(small - 0.5) < 0.1)  # edges: clamped support, still no aliasing
    const = np.full((2, 3, 5, 7), 2.5, dtype=np.float32)
    np.testing.assert_allclose(resize_images(const, (11, 13)), 2.5, atol=1e-6)
    assert resize_images(const, (5, 7)) is not None and resize_images(const, (5, 7)).shape == (2, 3, 5, 7)


@pytest.mark.parametrize("name", ["fuseme", "early", "entropy", "dynamic", "std"])
def test_chunking_and_out_memmap_give_identical_results(name: str, tmp_path) -> None:
    vols = _vols(n=7)
    path = tmp_path / "v.npy"
    np.save(path, vols)
    mm = np.load(path, mmap_mode="r")
    ref = {**REF, "sagittal_L": 3, "sagittal_R": 8}
    spec = preset(name, ref_index=ref, axis_range={"axial": (4, 13)})  # dynamic: the slab
    whole = project(vols, spec, chunk_size=100)
    out = np.lib.format.open_memmap(tmp_path / "o.npy", mode="w+", dtype=np.float32, shape=whole.shape)
    calls = []
    res = project(mm, spec, chunk_size=3, out=out, progress=lambda d, t: calls.append((d, t)))
    assert res is out
    np.testing.assert_array_equal(np.asarray(out), whole)
    assert calls == [(3, 7), (6, 7), (7, 7)]


def test_project_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="volumes must be a 4-D array N×D×H×W, got shape \\(12, 14, 16\\)"):
        project(_vols()[0], preset("mip"))
    with pytest.raises(ConfigError, match="no reference slice for the axial view"):
        project(_vols(), preset("slice"))
    with pytest.raises(ConfigError, match="spec was resolved for grid \\(8, 8, 8\\)"):
        project(_vols(), preset("mip", grid_shape=(8, 8, 8)))
    with pytest.raises(ConfigError, match="out must be float32 of shape \\(4, 1, 14, 12\\)"):
        project(_vols(), preset("mip"), out=np.zeros((4, 1, 12, 14), dtype=np.float32))
    with pytest.raises(ConfigError, match="ε=9 needs 19 slices"):
        project(_vols(), preset("slices", epsilon=9, ref_index={"axial": 8}))


# ------------------------------------------------------------------ reference slices
def _cohort(vols: np.ndarray, **meta: object) -> Cohort:
    n = len(vols)
    scans = pd.DataFrame({"scan_id": [f"s{i}" for i in range(n)], "subject_id": [f"p{i}" for i in range(n)],
                          "visit": 0, "label": ["control" if i % 2 else "PD" for i in range(n)]})
    return Cohort(vols, scans, CohortMeta(grid_shape=vols.shape[1:], class_names=["control", "PD"], **meta))


def test_reference_from_mean_image_brightest_region() -> None:
    vols = np.abs(_vols(n=6, grid=(20, 22, 24), seed=1)) * 0.1
    vols[:, 12:15, 5:8, 16:19] += 5.0  # bright blob centred at (13, 6, 17)
    vols[:3, 2, 2, 2] += 40.0  # a single hot voxel holds less total intensity than the blob
    spec = resolve_reference(preset("fuseme", ref_mode="midline", mask_striatum=True, crop_margin=1), _cohort(vols))
    assert spec.ref_index == {"sagittal": 13, "coronal": 6, "axial": 17}
    assert spec.ref_source == "mean_image" and spec.grid_shape == (20, 22, 24)
    # axial image: rows = y reversed (22 rows), cols = x; blob y 5…7 → rows 14…16, x 12…14, margin 1
    assert spec.crop_box["axial"] == (13, 18, 11, 16)
    assert spec.crop_box["coronal"] == (24 - 1 - 18 - 1, 24 - 16 + 1, 11, 16)
    assert spec.crop_box["sagittal"] == (4, 9, 4, 9)


def test_reference_from_atlas_in_mni_space() -> None:
    grid = (32, 32, 32)
    vols = _vols(n=2, grid=grid)
    center = atlas.striatum_center(grid, atlas.mni_grid_affine(grid))
    spec = resolve_reference(preset("fuseme", ref_mode="midline"), CohortMeta(grid_shape=grid, class_names=["a", "b"], space="MNI"))
    assert spec.ref_index == {"sagittal": center[0], "coronal": center[1], "axial": center[2]}
    assert spec.ref_source == "atlas"
    # an explicit affine in the metadata is used instead of the default field of view
    shifted = atlas.mni_grid_affine(grid).copy()
    shifted[2, 3] -= 4 * shifted[2, 2]  # the grid starts 4 voxels lower: the striatum sits 4 voxels higher
    spec2 = resolve_reference(preset("slice"), _cohort(vols, space="MNI", affine=shifted.tolist()))
    assert spec2.ref_index["axial"] == center[2] + 4


def test_explicit_reference_kept_and_checked() -> None:
    vols = _vols()
    spec = resolve_reference(preset("slice", ref_index={"axial": 3}), CohortMeta(grid_shape=GRID, class_names=["a", "b"]))
    assert spec.ref_index == {"axial": 3} and spec.ref_source == "explicit"
    with pytest.raises(ConfigError, match="ref_index\\['axial'\\]=20: slice 20 out of range"):
        resolve_reference(preset("slice", ref_index={"axial": 20}), _cohort(vols))
    with pytest.raises(ConfigError, match="not in MNI space .* pass the Cohort or volumes"):
        resolve_reference(preset("slice"), CohortMeta(grid_shape=GRID, class_names=["a", "b"]))


def test_reference_clamped_so_slices_stay_in_grid() -> None:
    vols = np.zeros((2, 10, 10, 10), dtype=np.float32)
    vols[:, 4:6, 4:6, 9] = 1.0  # brightest region on the top axial slice
    spec = resolve_reference(preset("slices", epsilon=2), _cohort(vols))
    assert spec.ref_index["axial"] == 7  # centre 9 clamped to 10 − 1 − ε
    assert project(vols, spec).shape == (2, 5, 10, 10)


def test_mask_striatum_crops_then_resizes_and_zero_mode() -> None:
    vols = _vols(n=2, grid=(16, 16, 16))
    box = {"axial": (2, 10, 4, 12)}
    spec = ProjectionSpec(method="mip", mask_striatum=True, crop_box=box, out_size=(16, 16))
    full = project(vols, ProjectionSpec(method="mip"))
    np.testing.assert_array_equal(project(vols, spec), resize_images(full[..., 2:10, 4:12], (16, 16)))
    zero = project(vols, spec.replace(mask_mode="zero", out_size=None))
    np.testing.assert_array_equal(zero[..., 2:10, 4:12], full[..., 2:10, 4:12])
    assert np.all(zero[..., :2, :] == 0) and np.all(zero[..., 10:, :] == 0) and np.all(zero[..., :, 12:] == 0)
    native = project(vols, spec.replace(out_size=None))
    assert native.shape == (2, 1, 8, 8)
    with pytest.raises(ConfigError, match="no striatum box for the axial view"):
        project(vols, ProjectionSpec(method="mip", mask_striatum=True))


def test_unorient_recovers_volume_axes() -> None:
    vols = _vols()
    got = unorient(project(vols, ProjectionSpec(method="slice", views=["coronal"], ref_index=REF)))
    np.testing.assert_array_equal(got[:, 0], vols[:, :, REF["coronal"], :])
