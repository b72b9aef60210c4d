"""Projection gallery layout: short column titles that never overlap, full scan IDs in the footer."""

from __future__ import annotations

import itertools

import pytest

from tests.conftest import make_cohort
from volkd.projection import preset
from volkd.projection.gallery import column_labels, gallery_figure, short_label

LONG_ID = "sub-{:04d}_ses-baseline_trc-DaTSCAN_rec-acstat_run-01_pet"


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("views_preset", ["fuseme", "mip"])
def test_long_ids_and_class_names_never_overlap(views_preset):
    c = make_cohort(n_subjects=6, visits=1, grid=12)
    c.scans["scan_id"] = [LONG_ID.format(i) for i in range(len(c))]
    c.scans["label"] = c.scans["label"].map({"control": "healthy control subjects", "PD": "PD"})
    c.meta.class_names = ["healthy control subjects", "PD"]
    c.path = "/a/rather/long/path/to/a/study/folder/with/many/levels/and/a/cohort_name_that_goes_on_and_on"
    fig = gallery_figure(c, [preset(views_preset)], n_per_class=2)
    r = fig.canvas.get_renderer()
    fig.draw(r)
    fig_box = fig.bbox
    top = [ax for ax in fig.axes if ax.get_title()]
    assert len(top) == 4 * len(preset(views_preset).slots)
    titles = [ax.title.get_window_extent(r) for ax in top]
    for a, b in itertools.combinations(titles, 2):
        assert not _overlap(a, b)
    assert all(t.x0 >= 0 and t.x1 <= fig_box.x1 for t in titles)
    assert [ax.get_title().split("\n")[0] for ax in top][:: len(preset(views_preset).slots)] == [
        "healthy contr… 1", "healthy contr… 2", "PD 1", "PD 2"]
    footer = fig.texts[-1]
    fb = footer.get_window_extent(r)
    assert fb.x0 >= 0 and fb.x1 <= fig_box.x1 + 1 and fb.y0 >= 0
    assert not any(_overlap(fb, ax.get_window_extent(r)) for ax in fig.axes)
    text = footer.get_text().replace("\n", "")
    for i, sid in enumerate(c.scan_ids[[0, 3, 1, 2]]):  # the examples: 2 controls, 2 PD
        assert sid in text
    assert "healthy control subjects 1 = " in footer.get_text().replace("\n", " ")
    sup = fig._suptitle.get_window_extent(r)
    assert sup.x0 >= 0 and sup.x1 <= fig_box.x1 and not any(_overlap(sup, t) for t in titles)


def test_short_labels():
    assert short_label("sagittal (c=32)") == "sagittal (c=32)"
    assert short_label("x" * 30) == "x" * 15 + "…" and len(short_label("x" * 30, 10)) == 10
    assert column_labels(["control", "PD"], [1, 0, 1]) == (["PD 1", "control 1", "PD 2"], ["PD 1", "control 1", "PD 2"])
