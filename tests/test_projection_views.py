"""Sagittal views per hemisphere (ref_mode) and the striatal slab of whole-axis methods (slab)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from volkd.data import atlas
from volkd.data.cohort import Cohort, CohortMeta
from volkd.errors import ConfigError
from volkd.inference.torch_ops import TorchProjection
from volkd.projection import ProjectionSpec, preset, project, rank_pool_weights, resolve_reference
from volkd.projection.gallery import render_gallery
from volkd.projection.methods import dynamic_image

ALL3 = ["axial", "coronal", "sagittal"]


def _mni(grid: tuple[int, int, int]) -> CohortMeta:
    return CohortMeta(grid_shape=grid, class_names=["control", "PD"], space="MNI")


def _striatal_voxels_in_sagittal_slices(spec: ProjectionSpec, grid: tuple[int, int, int]) -> dict[str, tuple[int, int]]:
    """Per sagittal slot: striatal voxels in its 2D+ε slices, and that slot's striatum's voxel count."""
    masks = atlas.striatum_masks(grid)
    side = {"sagittal": masks["caudate_L"] | masks["putamen_L"] | masks["caudate_R"] | masks["putamen_R"],
            "sagittal_L": masks["caudate_L"] | masks["putamen_L"], "sagittal_R": masks["caudate_R"] | masks["putamen_R"]}
    whole = side["sagittal"]
    out = {}
    for slot in spec.slots:
        if not slot.startswith("sagittal"):
            continue
        c = spec.ref_index[slot]
        out[slot] = (int(whole[c - spec.epsilon:c + spec.epsilon + 1].sum()), int(side[slot].sum()))
    return out


@pytest.mark.parametrize("grid", [(32, 32, 32), (64, 64, 64)])
def test_hemisphere_sagittal_views_contain_the_striatum(grid):
    midline = resolve_reference(preset("fuseme", ref_mode="midline"), _mni(grid))
    hemi = resolve_reference(preset("fuseme", ref_mode="hemispheres"), _mni(grid))
    assert hemi.slots == ["axial", "coronal", "sagittal_L", "sagittal_R"] and hemi.n_views == 4 and hemi.in_channels == 3
    mid = _striatal_voxels_in_sagittal_slices(midline, grid)["sagittal"]
    per = _striatal_voxels_in_sagittal_slices(hemi, grid)
    assert mid[0] <= 0.05 * mid[1]  # the midline slices fall between the striata (64³: 1 of 1030 voxels; 32³: 4 of 114)
    for slot, (inside, total) in per.items():
        assert inside >= 0.3 * total and inside >= 5 * max(mid[0], 1), (slot, inside, total)  # 3 slices through its striatum
    assert hemi.ref_index["sagittal_L"] < hemi.ref_index["sagittal"] < hemi.ref_index["sagittal_R"]  # RAS: left = low x


def test_hemisphere_shapes_for_fusion_modes():
    grid = (32, 32, 32)
    vols = np.random.default_rng(0).random((2, *grid), dtype=np.float32)
    joint = resolve_reference(preset("fuseme", ref_mode="hemispheres"), _mni(grid))
    x = project(vols, joint)
    assert x.shape == (2, 4, 3, 32, 32)
    c = joint.ref_index["sagittal_L"]
    # slot 2 is the left sagittal 2D+ε: volume slices c−1…c+1 along x, oriented (superior up)
    np.testing.assert_array_equal(x[:, 2, 1], np.swapaxes(vols[:, c], -1, -2)[:, ::-1, :])
    early = resolve_reference(preset("early", ref_mode="hemispheres"), _mni(grid))
    assert early.in_channels == 4 and project(vols, early).shape == (2, 4, 32, 32)
    mip = resolve_reference(preset("joint", method="mip", ref_mode="hemispheres"), _mni(grid))
    assert mip.axis_range["sagittal_L"][0] == 0 and mip.axis_range["sagittal_L"][1] == mip.axis_range["sagittal_R"][0]
    y = project(vols, mip)
    mid = mip.axis_range["sagittal_L"][1]
    np.testing.assert_allclose(y[:, 2, 0], np.swapaxes(vols[:, :mid].max(axis=1), -1, -2)[:, ::-1, :])  # left half only
    np.testing.assert_allclose(y[:, 3, 0], np.swapaxes(vols[:, mid:].max(axis=1), -1, -2)[:, ::-1, :])
    # the dynamic image reads both hemispheres lateral → medial: the right one in decreasing x
    dyn = resolve_reference(preset("joint", method="dynamic", ref_mode="hemispheres"), _mni(grid))
    z = project(vols, dyn)
    np.testing.assert_allclose(z[:, 2], dynamic_image(vols[:, :mid], 0).swapaxes(-1, -2)[..., ::-1, :], atol=1e-6)
    np.testing.assert_allclose(z[:, 3], dynamic_image(vols[:, mid:][:, ::-1], 0).swapaxes(-1, -2)[..., ::-1, :], atol=1e-6)


def test_ref_mode_and_slab_validation():
    with pytest.raises(ConfigError, match="'hemispheres' splits the sagittal view"):
        ProjectionSpec(method="slices", views=["axial", "coronal"], fusion="joint", ref_mode="hemispheres")
    with pytest.raises(ConfigError, match="fusion='none' takes exactly one view.*left and right"):
        ProjectionSpec(method="slice", views=["sagittal"], ref_mode="hemispheres")
    assert ProjectionSpec(method="slice", views=["sagittal"], fusion="early", ref_mode="hemispheres").in_channels == 2
    with pytest.raises(ConfigError, match="unknown ref_mode 'left'"):
        ProjectionSpec(ref_mode="left")
    with pytest.raises(ConfigError, match="slab: 'slices' reads the reference slices"):
        ProjectionSpec(method="slices", slab="striatum")
    with pytest.raises(ConfigError, match="unknown slab 'brain'"):
        ProjectionSpec(method="dynamic", slab="brain")
    with pytest.raises(ConfigError, match="no slice range for the axial view"):
        preset("dynamic", slab="striatum").validate_for((16, 16, 16))
    with pytest.raises(ConfigError, match=r"axis_range\['axial'\]=\(4, 20\): beyond the axial axis"):
        preset("dynamic", slab="striatum", axis_range={"axial": (4, 20)}).validate_for((16, 16, 16))


def test_old_specs_and_checkpoint_records_still_load():
    """A spec saved before ref_mode/slab existed (no such keys) loads with the old behaviour."""
    old = {"method": "slices", "views": ALL3, "fusion": "joint", "epsilon": 1, "ref_index": {"axial": 14, "coronal": 19, "sagittal": 16},
           "dynamic_minmax": True, "out_size": None, "mask_striatum": False, "mask_mode": "crop", "crop_margin": 2, "crop_box": None,
           "grid_shape": [32, 32, 32], "ref_source": "atlas", "name": "fuseme"}
    spec = ProjectionSpec.model_validate_json(json.dumps(old))
    assert spec.ref_mode == "midline" and spec.slab is None and spec.slots == ALL3 and spec.n_views == 3
    new = preset("fuseme", ref_mode="hemispheres", ref_index={"axial": 1, "coronal": 1, "sagittal": 1, "sagittal_L": 1, "sagittal_R": 2})
    assert ProjectionSpec.model_validate_json(new.model_dump_json()) == new
    dyn = preset("dynamic", slab="striatum", axis_range={"axial": (3, 9)})
    assert ProjectionSpec.model_validate_json(dyn.model_dump_json()).axis_range == {"axial": (3, 9)}


def test_labels_name_non_default_reference_and_slab():
    assert preset("fuseme", ref_mode="hemispheres").label == "fuseme" and preset("fuseme", ref_mode="midline").label == "fuseme-midline"
    assert preset("early", ref_mode="hemispheres").label == "early-hemispheres"
    assert preset("dynamic", slab="striatum").label == "dynamic" and preset("dynamic", slab=None).label == "dynamic-full"
    assert ProjectionSpec(method="dynamic", slab="striatum").label == "dynamic-axial-slab:striatum"
    assert ProjectionSpec(method="slice", views=ALL3, fusion="early", ref_mode="hemispheres").label == "slice-axial+coronal+sagittal-early-hemispheres"


# ------------------------------------------------------------------------- slab
def test_dynamic_slab_hand_computed_on_a_tiny_volume():
    """Slab slices 1…3 of 6: weights are rank pooling over those 3 slices only; outside slices do not matter."""
    v = np.zeros((1, 1, 2, 6), np.float32)
    v[0, 0, :, :] = [[100.0, 1.0, 2.0, 5.0, -50.0, 100.0], [0.0, 3.0, 3.0, 3.0, 7.0, 8.0]]
    spec = ProjectionSpec(method="dynamic", dynamic_minmax=False, slab="striatum", axis_range={"axial": (1, 4)})
    img = project(v, spec)
    alpha = [-4 / 3, 2 / 3, 2 / 3]  # α_t = Σ_{i=t..3} (2i − 4)/i: (−2 + 0 + 2/3, 0 + 2/3, 2/3)
    np.testing.assert_allclose(rank_pool_weights(3), alpha)
    # displayed axial image: rows = y reversed, cols = x
    # displayed row 0 is y = 1 (constant 3 over the slab: Σα = 0), row 1 is y = 0
    np.testing.assert_allclose(img[0, 0, :, 0], [3 * sum(alpha), -4 / 3 * 1 + 2 / 3 * 2 + 2 / 3 * 5], rtol=1e-6, atol=1e-6)
    w = v.copy()
    w[..., [0, 4, 5]] = np.random.default_rng(0).normal(size=(1, 1, 2, 3)) * 1e3  # change every slice outside the slab
    np.testing.assert_array_equal(project(w, spec), img)
    full = ProjectionSpec(method="dynamic", dynamic_minmax=False)
    assert not np.allclose(project(w, full), project(v, full))  # the whole-axis image sees them
    np.testing.assert_allclose(img, dynamic_image(v[..., 1:4], 2, minmax=False).swapaxes(-1, -2)[..., ::-1, :])


@pytest.mark.parametrize("grid", [(32, 32, 32), (64, 64, 64)])
def test_striatal_slab_spans_the_striatum_plus_margin(grid):
    spec = resolve_reference(preset("dynamic", slab="striatum", slab_margin=2), _mni(grid))
    st = atlas.striatum_mask(grid)
    zs = np.flatnonzero(st.any(axis=(0, 1)))
    assert spec.axis_range == {"axial": (int(zs[0]) - 2, int(zs[-1]) + 3)}
    # rank-pooling weights: every slice of the slab is a striatal slice or within 2 of one
    first, stop = spec.axis_range["axial"]
    assert stop - first == len(zs) + 4 < grid[2] // 2
    hemi = resolve_reference(preset("early", method="dynamic", ref_mode="hemispheres", slab="striatum"), _mni(grid))
    left = atlas.striatum_masks(grid)["putamen_L"] | atlas.striatum_masks(grid)["caudate_L"]
    xs = np.flatnonzero(left.any(axis=(1, 2)))
    assert hemi.axis_range["sagittal_L"] == (max(int(xs[0]) - 2, 0), int(xs[-1]) + 3)


def test_non_mni_hemispheres_fall_back_to_the_bright_voxels():
    rng = np.random.default_rng(2)
    vols = rng.random((4, 24, 20, 20), dtype=np.float32) * 0.1
    vols[:, 5:8, 9:12, 9:12] += 5.0  # "left striatum" (low x)
    vols[:, 15:18, 9:12, 9:12] += 5.0  # "right striatum"
    scans = pd.DataFrame({"scan_id": [f"s{i}" for i in range(4)], "subject_id": [f"p{i}" for i in range(4)],
                          "visit": 0, "label": ["control", "PD"] * 2})
    cohort = Cohort(vols, scans, CohortMeta(grid_shape=(24, 20, 20), class_names=["control", "PD"]))
    spec = resolve_reference(preset("fuseme", ref_mode="hemispheres"), cohort)
    assert spec.ref_source == "mean_image"
    assert spec.ref_index["sagittal_L"] == 6 and spec.ref_index["sagittal_R"] == 16
    slab = resolve_reference(preset("dynamic", slab="striatum", slab_margin=1), cohort)
    assert slab.axis_range == {"axial": (8, 13)}  # the brightest region's z 9…11, ± 1


# ------------------------------------------------------------------------- export and gallery
def test_torch_projection_matches_numpy_for_hemispheres_and_slabs():
    grid = (32, 32, 32)
    x = np.random.default_rng(1).normal(size=(3, *grid)).astype(np.float32)
    specs = [preset("fuseme", ref_mode="hemispheres"), preset("early", ref_mode="hemispheres"),
             preset("dynamic", slab="striatum"), preset("joint", method="dynamic", ref_mode="hemispheres"),
             preset("early", method="dynamic", ref_mode="hemispheres", slab="striatum"),
             preset("joint", method="mip", ref_mode="hemispheres", slab="striatum", mask_striatum=True)]
    for spec in specs:
        spec = resolve_reference(spec, _mni(grid))
        want = project(x, spec)
        got = TorchProjection(spec, grid)(torch.from_numpy(x)).numpy()
        assert got.shape == want.shape, spec.label
        assert np.abs(got - want).max() <= 1e-5, spec.label


def test_gallery_shows_each_hemisphere():
    grid = (32, 32, 32)
    vols = np.random.default_rng(3).random((4, *grid), dtype=np.float32)
    scans = pd.DataFrame({"scan_id": [f"s{i}" for i in range(4)], "subject_id": [f"p{i}" for i in range(4)],
                          "visit": 0, "label": ["control", "PD"] * 2})
    cohort = Cohort(vols, scans, _mni(grid))
    png = render_gallery(cohort, [preset("fuseme", ref_mode="hemispheres"), preset("joint", ref_mode="hemispheres")], n_per_class=1)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="share their views"):
        render_gallery(cohort, [preset("fuseme", ref_mode="hemispheres"), preset("fuseme", ref_mode="midline")], n_per_class=1)
