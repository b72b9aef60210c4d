"""Resampling: anti-aliasing, world-coordinate fidelity, MNI and field-of-view placement, crop."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from volkd.data.atlas import mni_grid_affine
from volkd.data.resample import (antialias_sigma, brain_bbox, fov_affine, placement, resample_scan,
                                 resample_to_grid)
from volkd.errors import ConfigError


def _world_com(vol: np.ndarray, affine: np.ndarray) -> np.ndarray:
    com = np.array(ndimage.center_of_mass(np.clip(vol, 0, None)))
    return affine[:3, :3] @ com + affine[:3, 3]


def _blob(shape, affine, centre_mm, fwhm_mm=12.0) -> np.ndarray:
    idx = np.indices(shape).reshape(3, -1).astype(float)
    world = affine[:3, :3] @ idx + affine[:3, 3:4]
    sigma = fwhm_mm / 2.355
    d2 = ((world - np.asarray(centre_mm, float)[:, None]) ** 2).sum(0)
    return np.exp(-d2 / (2 * sigma**2)).reshape(shape).astype(np.float32)


def test_checkerboard_is_not_aliased_when_downsampling():
    src = (np.indices((64, 64, 64)).sum(0) % 2 * 2 - 1).astype(np.float32)  # ±1, highest frequency
    aff = np.eye(4)
    dst = fov_affine(aff, tuple(slice(0, 64) for _ in range(3)), (20, 20, 20))
    smooth = resample_to_grid(src, aff, (20, 20, 20), dst)
    aliased = resample_to_grid(src, aff, (20, 20, 20), dst, antialias=False)
    inner = (slice(2, -2),) * 3
    assert np.abs(smooth[inner]).max() < 0.05
    assert np.abs(aliased[inner]).max() > 0.3  # the test can fail: without the prefilter it aliases
    assert antialias_sigma(aff, dst) == pytest.approx([1.1] * 3)


def test_upsampling_does_not_blur():
    assert antialias_sigma(np.diag([2.0, 2, 2, 1]), np.eye(4)).tolist() == [0.0, 0.0, 0.0]


def test_blob_keeps_its_world_centre_of_mass_across_grids_and_orientations():
    centre = (10.0, -20.0, 14.0)
    src_aff = np.array([[-1.5, 0, 0, 60.0], [0, 1.5, 0, -70.0], [0, 0, 1.5, -40.0], [0, 0, 0, 1]])  # LAS, 1.5 mm
    src = _blob((80, 90, 70), src_aff, centre)
    assert np.allclose(_world_com(src, src_aff), centre, atol=0.1)
    out, where = resample_scan(src, src_aff, (32, 32, 32), space="mni")
    np.testing.assert_allclose(where.affine, mni_grid_affine((32, 32, 32)))
    np.testing.assert_allclose(_world_com(out, where.affine), centre, atol=0.5)
    assert out.max() == pytest.approx(src.max(), rel=0.35)  # blurred a little, not wiped out


def test_mni_placement_is_identical_for_a_left_right_flipped_affine():
    aff = np.array([[2.0, 0, 0, -90.0], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    vol = ndimage.gaussian_filter(rng.random((46, 55, 46)).astype(np.float32), 1.5)
    vol[:10] += 1.0
    f = np.eye(4)
    f[0, 0], f[0, 3] = -1, vol.shape[0] - 1
    a, _ = resample_scan(vol, aff, (24, 24, 24), "mni")
    b, _ = resample_scan(np.flip(vol, 0).copy(), aff @ f, (24, 24, 24), "mni")
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert a[:12].mean() > a[12:].mean()  # the bright side stays on the left


def test_fov_placement_spans_the_scan_edge_to_edge():
    aff = np.array([[2.0, 0, 0, -10], [0, 3, 0, 5], [0, 0, 4, 0], [0, 0, 0, 1]])
    vol = np.random.default_rng(1).random((30, 20, 10)).astype(np.float32)
    same, where = resample_scan(vol, aff, (30, 20, 10), "fov")
    np.testing.assert_array_equal(same, vol)  # same grid: untouched
    np.testing.assert_allclose(where.affine, aff)
    _, where = resample_scan(vol, aff, (15, 10, 5), "fov")
    assert where.voxel_size == pytest.approx((4.0, 6.0, 8.0))
    # first target voxel centre sits half a target voxel inside the scan's outer edge
    edge = aff @ np.array([-0.5, -0.5, -0.5, 1])
    np.testing.assert_allclose(where.affine[:3, 3], edge[:3] + np.array([2.0, 3.0, 4.0]))


def test_crop_to_the_brain_bounding_box_first():
    vol = np.zeros((40, 40, 40), np.float32)
    vol[10:20, 5:30, 22:30] = 5.0
    vol += 0.01  # faint background below the threshold
    box = brain_bbox(vol, threshold=0.1, margin=2)
    assert box == (slice(8, 22), slice(3, 32), slice(20, 32))
    out, where = resample_scan(vol, np.eye(4), (14, 29, 12), "fov", crop=True, crop_margin=2)
    np.testing.assert_allclose(out, vol[box], atol=1e-6)
    np.testing.assert_allclose(where.affine[:3, 3], [8, 3, 20])
    assert brain_bbox(np.zeros((5, 5, 5))) == (slice(0, 5),) * 3


def test_crop_in_mni_space_and_unknown_space_are_config_errors():
    with pytest.raises(ConfigError, match="--crop applies to --space fov"):
        placement("mni", (8, 8, 8), crop=True)
    with pytest.raises(ConfigError, match="space 'talairach' unknown"):
        placement("talairach", (8, 8, 8), np.zeros((4, 4, 4)), np.eye(4))


def test_coverage_of_the_target_box():
    from volkd.data.resample import coverage

    aff = mni_grid_affine((16, 16, 16))
    assert coverage((16, 16, 16), aff, (16, 16, 16), aff) == pytest.approx(1.0)
    shifted = aff.copy()
    shifted[0, 3] += aff[0, 0] * 8  # half the grid to the right
    assert coverage((16, 16, 16), shifted, (16, 16, 16), aff) == pytest.approx(0.5)
    assert coverage((10, 10, 10), np.eye(4), (16, 16, 16), aff) < 0.01
