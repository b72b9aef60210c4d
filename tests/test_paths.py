"""volkd.paths: the one rule that turns IDs into names on disk (and refuses IDs no table can hold)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volkd.paths import MAX_STEM, UniqueNames, UnsafeIdError, check_id, id_problem, is_inside, is_plain_name, safe_name

_PORTABLE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")


@pytest.mark.parametrize("plain", ["S001_V0", "I123456", "sub-01", "a.b", "x" * MAX_STEM, "0", "a..b"])
def test_plain_ids_keep_their_name(plain):
    assert is_plain_name(plain) and safe_name(plain) == plain


@pytest.mark.parametrize("hostile", [
    "../../escape", "..", ".", "", "/etc/passwd", "a/b", "a\\b", "C:\\x", ".hidden", "-rf", "CON", "con.txt", "Lpt1",
    "nul", "trailing.", "x" * (MAX_STEM + 1), "Müller", "sub 01", "a:b", "a*b?", "日本語", "a\x00b",
])
def test_hostile_ids_map_to_portable_distinct_names(hostile):
    name = safe_name(hostile)
    assert _PORTABLE.match(name) and "/" not in name and "\\" not in name
    assert name not in (".", "..") and not name.startswith((".", "-")) and not name.endswith(".")
    assert name.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT1"}
    assert len(name) <= MAX_STEM + 11
    assert name != hostile  # sanitised, with a hash of the original
    assert re.search(r"-[0-9a-f]{10}\Z", name)


def test_sanitised_names_do_not_collide_with_each_other_or_with_plain_ids():
    ids = ["a/b", "a\\b", "a:b", "a b", "a_b", "A/B"]
    names = [safe_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert safe_name("a_b") == "a_b" and safe_name("a/b").startswith("a_b-")


def test_unique_names_within_a_folder_case_insensitively_and_keeps_the_table():
    names = UniqueNames()
    assert names.name("scan") == "scan"
    assert names.name("SCAN") == "SCAN_2"  # one file system may not tell them apart
    assert names.name("scan") == "scan"  # the same ID, the same name
    assert names.name("../x") == safe_name("../x")
    assert names.table == {"scan": "scan", "SCAN": "SCAN_2", "../x": safe_name("../x")}


@pytest.mark.parametrize("bad, why", [
    ("", "empty"), ("   ", "empty"), ("a\nb", "control"), ("a\tb", "control"), ("a\x00", "control"), ("a\x85", "control"),
    ("a\u2028b", "control"), ("x\ud800", "surrogate"), ("abc\u202edcba", "bidirectional"),
])
def test_ids_no_table_can_hold_are_refused(bad, why):
    assert why in id_problem(bad)
    with pytest.raises(UnsafeIdError, match="cannot be used"):
        check_id(bad, "scan ID")


@pytest.mark.parametrize("ok", ["../../escape", "a/b", "CON", "Müller", "日本語", "sub 01"])
def test_path_like_ids_are_kept_verbatim_in_tables(ok):
    assert id_problem(ok) is None and check_id(ok) == ok


def test_is_inside(tmp_path):
    (tmp_path / "a").mkdir()
    assert is_inside(tmp_path / "a" / "b", tmp_path) and is_inside(tmp_path, tmp_path)
    assert not is_inside(tmp_path / "a" / ".." / ".." / "x", tmp_path)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    assert not is_inside(tmp_path / "link" / "x", tmp_path)  # symlinks followed


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_becomes_one_portable_path_component(value):
    name = safe_name(value)
    assert _PORTABLE.match(name) and is_plain_name(name)
    assert safe_name(name) == name  # names are fixed points: writing twice gives the same file


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_distinct_ids_get_distinct_names(a, b):
    if a != b:
        assert safe_name(a) != safe_name(b)
