"""The AAL3 atlas on cohort grids: geometry, sides, regions."""

from __future__ import annotations

import numpy as np

from volkd.data import atlas


def test_mni_grid_affine_spans_ppmi_fov():
    aff = atlas.mni_grid_affine((64, 64, 64))
    first = aff @ [0, 0, 0, 1]
    last = aff @ [63, 63, 63, 1]
    vox = np.diag(aff)[:3]
    # the grid's outer edges coincide with the outer edges of PPMI's 91×109×91 2 mm field of view
    np.testing.assert_allclose(first[:3] - vox / 2, [-91, -127, -73])
    np.testing.assert_allclose(last[:3] + vox / 2, [91, 91, 109])
    np.testing.assert_allclose(atlas.mni_grid_affine((91, 109, 91)), atlas.MNI_FOV_AFFINE)


def test_left_is_left_and_regions_are_where_anatomy_says():
    g = (32, 32, 32)
    aff = atlas.mni_grid_affine(g)
    masks = atlas.striatum_masks(g)
    centre = {}
    for name, m in masks.items():
        assert m.sum() > 3, name
        idx = np.argwhere(m).mean(axis=0)
        centre[name] = (aff @ [*idx, 1])[:3]
    # RAS: left hemisphere has negative x
    assert centre["caudate_L"][0] < 0 < centre["caudate_R"][0]
    assert centre["putamen_L"][0] < 0 < centre["putamen_R"][0]
    # putamen lies lateral to the caudate; caudate head lies anterior to the putamen centre
    assert abs(centre["putamen_L"][0]) > abs(centre["caudate_L"][0])
    assert centre["caudate_R"][1] > centre["putamen_R"][1]
    # MNI striatum centre ≈ (±20, +5, +5) mm; occipital reference is posterior (y < -60 mm)
    assert -20 < centre["putamen_R"][1] < 20 and -15 < centre["putamen_R"][2] < 20
    occ = np.argwhere(atlas.occipital_mask(g)).mean(axis=0)
    assert (aff @ [*occ, 1])[1] < -60


def test_fractions_are_partial_volumes_and_brain_contains_striatum():
    g = (24, 24, 24)
    frac = atlas.region_fraction(tuple(atlas.STRIATUM_LABELS.values()), g)
    assert frac.dtype == np.float32 and 0 <= frac.min() and frac.max() <= 1
    assert ((frac > 0) & (frac < 1)).sum() > 0  # edge voxels partly covered
    brain = atlas.brain_fraction(g)
    assert brain[atlas.striatum_mask(g)].min() > 0.8
    assert brain[0, 0, 0] == 0  # corner of the field of view is outside the head


def test_striatum_center_is_centre_of_extent_and_follows_affine():
    g = (64, 64, 64)
    c = atlas.striatum_center(g)
    m = atlas.striatum_mask(g)
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        present = np.flatnonzero(m.any(axis=other))
        assert c[ax] == int(np.floor((present[0] + present[-1]) / 2 + 0.5))
    shifted = atlas.mni_grid_affine(g).copy()
    shifted[2, 3] -= 3 * shifted[2, 2]  # grid moved 3 voxels down: the striatum sits 3 voxels higher
    assert atlas.striatum_center(g, shifted)[2] == c[2] + 3
