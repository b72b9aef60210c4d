"""Provenance records: package versions and fingerprints."""

from __future__ import annotations

from importlib import metadata

import numpy as np

from volkd.provenance import array_fingerprint, package_versions, provenance


def test_package_versions_default_and_selected():
    v = package_versions()
    assert v["numpy"] == metadata.version("numpy") and "python" in v and "monai" in v
    sel = package_versions(("scipy", "not-a-real-package-xyz"), python=False)
    assert sel == {"scipy": metadata.version("scipy")}  # missing packages are omitted, no python key


def test_provenance_and_fingerprint():
    rec = provenance(seed=3)
    assert rec["seed"] == 3 and rec["versions"]["torch"] and rec["created_utc"].endswith("+00:00")
    a = np.arange(64, dtype=np.float32).reshape(4, 16)
    assert array_fingerprint(a) == array_fingerprint(a.copy())
    b = a.copy()
    b[3, 0] += 1
    assert array_fingerprint(a) != array_fingerprint(b)
    assert array_fingerprint(a) != array_fingerprint(a.reshape(16, 4))  # shape is part of it
