"""docs/reliability.md names the tests behind each promise: every one it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_named_in_reliability_md_exists():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    current, named, missing = None, 0, []
    for m in re.finditer(r"`(test_\w+\.py)(?:::(\w+))?`|`::(\w+)`", doc):
        file, test, same_file_test = m.groups()
        current = file or current
        name = test or same_file_test
        assert current is not None and (ROOT / "tests" / current).is_file(), current
        if name:
            named += 1
            if f"def {name}(" not in (ROOT / "tests" / current).read_text():
                missing.append(f"{current}::{name}")
    assert not missing and named >= 30
