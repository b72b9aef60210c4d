"""ProjectionSpec: presets, shape properties, validation messages, JSON round-trip."""

from __future__ import annotations

import json

import pytest

from volkd.errors import ConfigError
from volkd.projection import PRESETS, ProjectionSpec, preset

ALL3 = ["axial", "coronal", "sagittal"]


@pytest.mark.parametrize("name", ["slice", "slices", "mip", "mean", "std", "entropy", "dynamic"])
def test_method_presets_are_single_axial(name: str) -> None:
    s = preset(name)
    assert (s.method, s.views, s.fusion, s.name) == (name, ["axial"], "none", name)
    assert s.n_views == 1 and not s.multiview
    assert s.in_channels == (3 if name == "slices" else 1)


def test_fuseme_early_joint_presets() -> None:
    f = preset("fuseme")
    assert (f.method, f.epsilon, f.views, f.fusion) == ("slices", 1, ALL3, "joint")
    assert (f.in_channels, f.n_views, f.multiview, f.channels_per_view) == (3, 3, True, 3)
    e = preset("early")
    assert (e.method, e.views, e.fusion, e.in_channels, e.n_views) == ("slice", ALL3, "early", 3, 1)
    e9 = preset("early", method="slices")
    assert (e9.in_channels, e9.n_views, e9.label) == (9, 1, "early-slices")
    j = preset("joint", method="mip")
    assert (j.in_channels, j.n_views, j.multiview, j.label) == (1, 3, True, "joint-mip")
    assert set(PRESETS) == {"slice", "slices", "mip", "mean", "std", "entropy", "dynamic", "early", "joint", "fuseme"}


def test_output_shape_and_common_size() -> None:
    grid = (91, 109, 91)
    assert preset("fuseme").output_shape(grid) == (3, 3, 109, 109)  # views differ: largest rows/cols
    assert preset("mip").output_shape(grid) == (1, 109, 91)  # axial: rows = y, cols = x
    assert preset("mip", views=["sagittal"]).output_shape(grid) == (1, 91, 109)
    assert preset("early", out_size=(64, 48)).output_shape(grid) == (3, 64, 48)


def test_json_round_trip() -> None:
    s = preset("fuseme", ref_index={"axial": 30, "coronal": 33, "sagittal": 31}, out_size=(48, 48),
               grid_shape=(64, 64, 64), mask_striatum=True, crop_box={"axial": (1, 40, 2, 60)}, ref_source="atlas")
    text = s.model_dump_json()
    back = ProjectionSpec.model_validate_json(text)
    assert back == s
    assert back.out_size == (48, 48) and back.crop_box == {"axial": (1, 40, 2, 60)}
    assert json.loads(text)["ref_index"] == {"axial": 30, "coronal": 33, "sagittal": 31}
    assert ProjectionSpec(**json.loads(text)) == s


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"method": "median"}, "invalid projection spec: field 'method': unknown method 'median'; choose one of"),
        ({"method": "fuseme"}, "'fuseme' is a preset: use preset('fuseme')"),
        ({"views": ["axial", "frontal"], "fusion": "early"}, "field 'views': unknown view(s) ['frontal']"),
        ({"views": []}, "field 'views': no views given"),
        ({"views": ["axial", "axial"], "fusion": "early"}, "repeated view"),
        ({"views": ["axial", "coronal"]}, "fusion='none' takes exactly one view, got 2"),
        ({"views": ["axial"], "fusion": "joint"}, "fusion='joint' needs at least two views"),
        ({"fusion": "late"}, "field 'fusion': unknown fusion 'late'; choose one of none, early, joint"),
        ({"epsilon": -1}, "field 'epsilon': must be ≥ 0, got -1"),
        ({"epsilon": "two"}, "field 'epsilon': Input should be a valid integer, unable to parse string as an integer (got 'two')"),
        ({"ref_index": {"axial": -3}}, "field 'ref_index': slice indices must be ≥ 0"),
        ({"ref_index": {"top": 3}}, "field 'ref_index': unknown view(s) ['top']"),
        ({"out_size": (0, 64)}, "field 'out_size': must be two positive sizes"),
        ({"colour": "red"}, "invalid projection spec: unknown field 'colour'; allowed fields: method, views, fusion"),
        ({"method": "slices", "epsilon": 40, "grid_shape": (64, 64, 64)}, "ε=40 needs 81 slices but the axial axis of grid (64, 64, 64) has 64; use ε ≤ 31"),
        ({"method": "slices", "epsilon": 2, "ref_index": {"axial": 62}, "grid_shape": (64, 64, 64)}, "ref_index['axial']=62: slices 60…64 out of range"),
        ({"ref_index": {"axial": 64}, "grid_shape": (64, 64, 64)}, "ref_index['axial']=64: slice 64 out of range; the axial axis of grid (64, 64, 64) has slices 0…63"),
        ({"mask_striatum": True, "crop_box": {"axial": (0, 70, 0, 10)}, "grid_shape": (64, 64, 64)}, "crop_box['axial']=(0, 70, 0, 10) exceeds the axial image size (64, 64)"),
    ],
)
def test_invalid_specs_fail_at_construction(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        ProjectionSpec(**fields)
    assert message in str(e.value)


def test_invalid_json_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        ProjectionSpec.model_validate_json('{"method": "nope"}')


def test_unknown_preset_and_grid_checks_in_validate_for() -> None:
    with pytest.raises(ConfigError, match="unknown projection preset 'fusion'; choose one of"):
        preset("fusion")
    s = preset("slices", epsilon=5)
    s.validate_for((64, 64, 64), require_reference=False)
    with pytest.raises(ConfigError, match="ε=5 needs 11 slices but the axial axis of grid \\(8, 8, 8\\) has 8; use ε ≤ 3"):
        s.validate_for((8, 8, 8))
    with pytest.raises(ConfigError, match="no reference slice for the axial view .*resolve_reference"):
        s.validate_for((64, 64, 64))
    preset("mip").validate_for((8, 8, 8))  # whole-axis methods need no reference


def test_spec_is_immutable_and_replace_revalidates() -> None:
    s = preset("mip")
    with pytest.raises(Exception):
        s.method = "std"  # type: ignore[misc]
    assert s.replace(method="std").method == "std"
    with pytest.raises(ConfigError, match="unknown method"):
        s.replace(method="bogus")
