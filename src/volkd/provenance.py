"""What produced an output: command line, versions, seeds, time, data fingerprint."""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import sys
from importlib import metadata
from typing import Any

import numpy as np

_PACKAGES = (
    "volkd", "torch", "monai", "numpy", "scipy", "scikit-learn", "pandas",
    "nibabel", "pydicom", "matplotlib", "pydantic",
)


def package_versions(names: tuple[str, ...] = _PACKAGES, python: bool = True) -> dict[str, str]:
    """Versions of installed packages ``names`` (default: those that shape volkd's results;
    missing ones omitted), preceded by Python's own unless ``python=False``."""
    out = {"python": platform.python_version()} if python else {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def command_line() -> str:
    """The command line of this process, as typed (best effort)."""
    return " ".join(sys.argv)


def provenance(**extra: Any) -> dict[str, Any]:
    """A provenance record: command, UTC time, host platform, package versions, extras."""
    rec: dict[str, Any] = {
        "command": command_line(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "versions": package_versions(),
    }
    rec.update(extra)
    return rec


def array_fingerprint(arr: np.ndarray, chunk: int = 16, *extra: bytes) -> str:
    """SHA-256 of an array's shape, dtype and bytes (read in chunks along axis 0)."""
    h = hashlib.sha256()
    h.update(str(arr.shape).encode())
    h.update(str(arr.dtype).encode())
    for i in range(0, arr.shape[0], chunk):
        h.update(np.ascontiguousarray(arr[i:i + chunk]).tobytes())
    for e in extra:
        h.update(e)
    return h.hexdigest()
