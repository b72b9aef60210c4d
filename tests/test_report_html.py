"""The HTML report is valid HTML: strict html5lib parse, alt text on every figure, unique ids, class counts as a
table; and, when a Chromium/Chrome is installed, it renders headless with every figure decoded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_cohort
from tests.test_study_aggregate import fabricate_study, tiny_config
from volkd.projection import preset
from volkd.projection.gallery import write_gallery
from volkd.report.render import build_report, class_counts_table

html5lib = pytest.importorskip("html5lib")  # a test dependency (volkd[test]); skip only outside that install

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: A class name that must be escaped, to make sure the table is built from data, not pasted as text.
ODD_CLASS = "PD <&> co"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    cfg = tiny_config(repeats=3)
    store = fabricate_study(tmp_path_factory.mktemp("html") / "study", cfg)
    cohort = {"n_scans": 30, "n_subjects": 20, "scans_per_class": {"control": 12, ODD_CLASS: 18},
              "subjects_per_class": {"control": 8, ODD_CLASS: 12}, "class_names": ["control", ODD_CLASS],
              "grid_shape": [16, 16, 16], "modality": "spect", "source": "synthetic"}
    (store.root / "environment.json").write_text(json.dumps({"cohort": cohort, "wall_seconds": 12.0, "peak_rss_mb": 300.0}))
    c = make_cohort(n_subjects=6, visits=1, grid=12)
    c.scans["scan_id"] = [f"sub-{i:04d}_ses-baseline_trc-DaTSCAN_rec-acstat_pet" for i in range(len(c))]
    (store.root / "figures").mkdir(exist_ok=True)
    write_gallery(store.root / "figures" / "gallery-axial.png", c, [preset("mip")], n_per_class=2)
    np.savez(store.root / "graphs.npz", labels=np.array([0, 0, 1, 1]), repeat=np.int64(0), **{"3D teacher": np.eye(4)})
    build_report(store, cfg)
    return store.root


def _parse(path: Path):
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    doc = parser.parse(path.read_bytes())  # strict: the first parse error raises
    assert parser.errors == []
    return doc


def test_html_report_parses_strictly_with_alt_text_and_unique_ids(study):
    doc = _parse(study / "report.html")
    imgs = doc.findall(".//img")
    figures = doc.findall(".//figure")
    assert len(imgs) == len(figures) == 7  # gallery, metric, ROC, confusion, reliability, relation graphs, training curves
    for img in imgs:
        alt = (img.get("alt") or "").strip()
        assert alt and len(alt) > 15, img.attrib.get("alt")
        assert img.get("src", "").startswith("data:image/png;base64,")
    for fig in figures:
        assert (fig.find("figcaption").text or "").strip()
    ids = [e.get("id") for e in doc.iter() if e.get("id")]
    assert len(ids) == len(set(ids))
    assert doc.tag == "html" and doc.get("lang") == "en" and doc.find(".//title").text.startswith("volkd study report")


def test_class_counts_are_a_table_not_a_dict(study):
    html = (study / "report.html").read_text()
    md = (study / "report.md").read_text()
    assert "{'" not in html and "{&#x27;" not in html and "{'" not in md
    assert "| class | scans | % of scans | subjects |" in md
    assert "| control | 12 | 40.0 | 8 |" in md and f"| {ODD_CLASS} | 18 | 60.0 | 12 |" in md
    doc = _parse(study / "report.html")
    tables = [t for t in doc.findall(".//table") if [th.text for th in t.findall(".//th")][:2] == ["class", "scans"]]
    assert len(tables) == 1
    cells = [td.text for td in tables[0].findall(".//td")]
    assert cells == ["control", "12", "40.0", "8", ODD_CLASS, "18", "60.0", "12"]  # escaped in the file, intact once parsed


def test_gallery_caption_points_to_the_full_ids(study):
    md = (study / "report.md").read_text()
    assert "the full scan IDs are listed under the panels" in md


def test_class_counts_table_without_subjects():
    df = class_counts_table({"scans_per_class": {"a": 1, "b": 3}})
    assert df.to_dict("records") == [{"class": "a", "scans": 1, "% of scans": "25.0"}, {"class": "b", "scans": 3, "% of scans": "75.0"}]


def _browser() -> str | None:
    env = os.environ.get("VOLKD_BROWSER")
    if env:
        return env
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def test_report_renders_in_a_headless_browser(study, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium/Chrome found (set VOLKD_BROWSER); the strict HTML parse above still ran")
    report = (study / "report.html").resolve().as_uri()
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
              f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,3000"]
    run = lambda *a: subprocess.run([*common, *a], capture_output=True, text=True, timeout=120)  # noqa: E731
    dom = run("--dump-dom", report)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = html5lib.HTMLParser(namespaceHTMLElements=False).parse(dom.stdout)
    source = _parse(study / "report.html")
    # the browser built the same document the strict parser did
    for tag in ("img", "table", "figure", "h2"):
        assert len(parsed.findall(f".//{tag}")) == len(source.findall(f".//{tag}")), tag
    shot = tmp_path / "shot.png"
    res = run(f"--screenshot={shot}", report)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] >= 1000 and img.std() > 0.05  # a rendered page, not a blank or an error page
