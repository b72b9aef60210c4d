"""Property-based tests (hypothesis): random hostile IDs, label tables and configs give a VolkdError or
success — never another exception — and never a write outside the output folder."""

from __future__ import annotations

import shutil
import string
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from volkd.data.cohort import Cohort
from volkd.data.importer import import_scans
from volkd.errors import ConfigError, VolkdError
from volkd.experiment.config import load_config, validate_config
from volkd.experiment.runner import default_out
from volkd.paths import UniqueNames, is_inside, is_plain_name

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
N = 4
#: Text that looks like what people put in ID columns, biased towards the dangerous.
HOSTILE_PIECES = ["../", "..", "/", "\\", ".", "-", "CON", "nul", " ", "\t", "\n", "\x00", "\u202e", "é", "日本", "~", "$HOME",
                  "*", "?", ":", "|", "<", ">", '"', "'", "%s", "{0}", "\ud800", "=cmd|' /C calc'!A0"]
ids = (st.lists(st.sampled_from(HOSTILE_PIECES) | st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=3),
                min_size=1, max_size=6).map("".join)
       | st.text(min_size=1, max_size=40))


def sandbox() -> tuple[Path, Path]:
    """A fresh folder tree; outputs go three levels down, so ``../`` escapes stay observable."""
    root = Path(tempfile.mkdtemp(prefix="volkd-prop-"))
    work = root / "a" / "b" / "c"
    work.mkdir(parents=True)
    return root, work


def writes(root: Path, out: Path, fn) -> None:
    """Run ``fn``; a VolkdError is fine, any other exception fails; nothing may appear outside ``out``."""
    before = set(root.rglob("*"))
    try:
        fn()
    except VolkdError:
        pass
    outside = [p for p in set(root.rglob("*")) - before if not (p == out or out in p.parents)]
    assert not outside, outside[:5]


def volumes(n: int = N) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 6, 6, 6)).astype(np.float32) + 2


@FAST
@given(st.lists(ids, min_size=N, max_size=N, unique=True) | st.lists(ids, min_size=N, max_size=N),
       st.sampled_from([[0, 1, 0, 1], [2, 0, 1, 1]]))
def test_random_scan_ids_in_an_npz(scan_ids, labels):
    root, work = sandbox()
    try:
        src = root / "in.npz"
        np.savez(src, images=volumes(), labels=np.array(labels), scan_ids=np.array(scan_ids))
        out = work / "cohort"
        writes(root, out, lambda: import_scans(src, out, target_grid=None))
        event("imported" if out.exists() else "refused")
        if out.exists():
            c = Cohort.load(out, verify=True)
            assert list(c.scan_ids) == [str(s) for s in np.array(scan_ids)]  # verbatim, as numpy stored them
            names = UniqueNames()
            files = [names.name(s) for s in c.scan_ids]
            assert len(set(f.casefold() for f in files)) == len(files) and all(is_plain_name(f) for f in files)
    finally:
        shutil.rmtree(root)


SCAN_IDS = [f"v_{i:05d}" for i in range(N)]
cells = ids | st.sampled_from(["", *SCAN_IDS, "PD", "control", "0", "1", "BL", "V04", "-1", "nan", "1e308", "2.5"])


@st.composite
def label_tables(draw) -> list[dict[str, str]]:
    """Rows for some of the NPZ's scans (and maybe strangers), random subjects, labels and extra columns,
    now and then a dropped cell or a stray row."""
    rows = []
    for sid in draw(st.lists(st.sampled_from(SCAN_IDS), unique=True, max_size=N)) + draw(st.lists(ids, max_size=2)):
        row = {"scan_id": sid, "subject_id": draw(st.sampled_from(["p1", "p2", "p3"]) | ids),
               "label": draw(st.sampled_from(["PD", "control"]) | cells)}
        row.update(draw(st.dictionaries(st.sampled_from(["visit", "age", "sex", "site", "split"]), cells, max_size=3)))
        if draw(st.integers(0, 12)) == 0:
            row.pop(draw(st.sampled_from(sorted(row))))
        rows.append(row)
    if draw(st.integers(0, 5)) == 0:
        rows.insert(draw(st.integers(0, len(rows))), draw(st.dictionaries(ids, cells, max_size=3)))
    return rows


@FAST
@given(label_tables(), st.sampled_from([None, "PD=PD,control=control", "0=a,1=b"]))
def test_random_labels_csv(rows, mapping):
    root, work = sandbox()
    try:
        np.savez(root / "v.npz", images=volumes())
        pd.DataFrame(rows).to_csv(root / "labels.csv", index=False, errors="surrogatepass")  # invalid UTF-8 too
        out = work / "cohort"
        writes(root, out, lambda: import_scans(root / "v.npz", out, labels_csv=root / "labels.csv", label_map=mapping,
                                               target_grid=None))
        event("imported" if out.exists() else "refused")
        if out.exists():
            Cohort.load(out, verify=True)
    finally:
        shutil.rmtree(root)


@FAST
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_random_bytes_as_labels_csv(raw):
    root, work = sandbox()
    try:
        np.savez(root / "v.npz", images=volumes())
        (root / "labels.csv").write_bytes(raw)
        writes(root, work / "c", lambda: import_scans(root / "v.npz", work / "c", labels_csv=root / "labels.csv", target_grid=None))
    finally:
        shutil.rmtree(root)


KEYS = ["name", "seed", "dataset", "kind", "path", "n_subjects", "grid", "split", "protocol", "repeats", "fractions",
        "teacher", "student", "arch", "width", "projections", "kd", "params", "training", "epochs", "batch_size", "lr",
        "extra", "report", "execution", "executor", "external", "affinity", "temperature", "w_kd", "monitor", "device"]
scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | ids | st.sampled_from(
    ["graph", "none", "hinton", "mip", "fuseme", "cohort", "synthetic", "holdout", "kfold", "official", "lightcnn", "knn", "cuda"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | ids, inner, max_size=5), max_leaves=20)
random_configs = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)
BASE = {"name": "p", "dataset": {"n_subjects": 16, "grid": 16}, "split": {"repeats": 1}, "projections": ["mip"],
        "kd": [{"name": "none"}, {"name": "graph", "params": {}}], "training": {"epochs": 1, "extra": {}},
        "report": {"latency_runs": 1}, "execution": {"executor": "local"}}
#: Paths into BASE and values that are plausible there (valid or nearly so).
PLAUSIBLE = {
    ("name",): ids, ("seed",): st.integers(-5, 5), ("dataset", "kind"): st.sampled_from(["synthetic", "cohort"]),
    ("dataset", "path"): ids | st.none(), ("dataset", "n_subjects"): st.integers(0, 40), ("dataset", "options"): st.dictionaries(ids, scalars, max_size=2),
    ("split", "protocol"): st.sampled_from(["holdout", "kfold", "official"]), ("split", "repeats"): st.integers(0, 4),
    ("split", "fractions"): st.lists(st.floats(0, 1), min_size=2, max_size=4), ("projections",): st.lists(st.sampled_from(["mip", "fuseme", "slices", "bogus"]), max_size=3),
    ("kd", 1, "params"): st.dictionaries(st.sampled_from(["affinity", "w_fg", "k", "temperature", "bogus"]), scalars, max_size=2),
    ("kd", 1, "w_kd"): st.floats(-1, 10) | st.just(float("nan")), ("training", "epochs"): st.integers(-1, 3),
    ("training", "extra"): st.dictionaries(st.sampled_from(["weight_decay", "augment", "device", "bogus"]), scalars, max_size=2),
    ("training", "lr"): st.floats(allow_nan=True, allow_infinity=True), ("report", "headline_metric"): st.sampled_from(["roc_auc", "f1_weighted", "bogus"]),
    ("execution", "executor"): st.sampled_from(["local", "ray", "slurm"]), ("external",): st.lists(st.fixed_dictionaries({"name": ids}), max_size=2),
    ("teacher", "arch"): st.sampled_from(["lightcnn", "resnet10", "vgg"]), ("student", "width"): st.integers(0, 64) | st.none(),
}
PATHS = sorted(PLAUSIBLE)


@st.composite
def mutated_configs(draw) -> dict:
    """The tiny valid config with up to three keys set to random values."""
    import copy

    data = copy.deepcopy(BASE)
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 3]))):
        path = draw(st.sampled_from(PATHS))
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
        node[path[-1]] = draw(PLAUSIBLE[path] | values)
    return data


configs = mutated_configs() | random_configs


@settings(max_examples=200, deadline=None, database=None)
@given(configs)
def test_random_configs_validate_or_raise_config_error(data):
    try:
        cfg = validate_config(data)
    except ConfigError:
        event("refused")
        return
    event("valid")
    out = default_out(cfg)  # the default study folder stays inside volkd-runs whatever the name
    assert is_inside(out, "volkd-runs") and out != Path("volkd-runs") and is_plain_name(out.name)


@settings(max_examples=100, deadline=None, database=None)
@given(st.text(max_size=200) | configs.map(lambda d: yaml.safe_dump(d, allow_unicode=True)) | st.binary(max_size=100).map(
    lambda b: b.decode("latin-1")))
def test_random_yaml_files(text):
    root, _ = sandbox()
    try:
        p = root / "study.yaml"
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(p)
        except ConfigError:
            pass
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00garbage", b"name: \xe9t\xe9\n"])
def test_yaml_that_is_not_utf8_is_a_config_error(tmp_path, raw):
    (tmp_path / "s.yaml").write_bytes(raw)
    with pytest.raises(ConfigError, match="s.yaml"):
        load_config(tmp_path / "s.yaml")
