"""The one rule for turning identifiers (scan, subject, study IDs) into names on disk.

IDs come from users' files (CSV cells, NPZ ``scan_ids``, DICOM tags) and may hold anything:
``../``, ``/``, control characters, ``CON``, 300 characters. volkd keeps every ID verbatim in its
tables (scans.csv, predictions, explain.csv) and never uses one as a path as it is:

* :func:`id_problem` names what makes an ID unusable *anywhere* (control or line-break
  characters, unpaired surrogates, bidirectional overrides, empty): those are refused at import
  and when a cohort is loaded, because they would corrupt CSV tables and mislead readers.
* :func:`safe_name` maps any other ID to a portable file name: an ID that is already a plain name
  (letters, digits, ``._-``, not hidden, not a reserved device name, ≤ 100 characters) is kept as
  it is; anything else is sanitised and suffixed with a hash of the original, so two IDs never
  share a name. :class:`UniqueNames` hands out names unique within one folder (also on
  case-insensitive file systems) and keeps the ID → name table that each writer records.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path

from volkd.errors import VolkdError

#: Longest name stem produced (writers add suffixes such as ``_gradcam.nii.gz``; NAME_MAX is 255 bytes).
MAX_STEM = 100
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")
_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9._-]")
#: Device names Windows reserves in every folder, with any extension.
RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{d}{i}" for d in ("COM", "LPT") for i in list("0123456789") + ["¹", "²", "³"]]
)
#: Characters that reorder displayed text ("Trojan Source"): an ID must read as it is stored.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


class UnsafeIdError(VolkdError):
    """An identifier that volkd cannot store faithfully (control characters, empty, …)."""


def id_problem(value: str) -> str | None:
    """Why ``value`` cannot be used as an ID at all (``None`` when it can).

    Refused: empty or blank, control characters (tab, newline, NUL…), line/paragraph
    separators, unpaired surrogates (not encodable as UTF-8) and bidirectional overrides.
    Path separators, ``..`` and reserved names are *not* problems here: :func:`safe_name` maps them.
    """
    if not value.strip():
        return "it is empty"
    for ch in value:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Zl", "Zp"):
            return f"it contains the control character {ch!r}"
        if cat == "Cs":
            return f"it contains an unpaired surrogate {ch!r} (not valid UTF-8)"
        if ch in _BIDI:
            return f"it contains the bidirectional-text control {ch!r} (text would display reordered)"
    return None


def check_id(value: str, what: str = "ID") -> str:
    """Return ``value`` when :func:`id_problem` finds nothing; else raise :class:`UnsafeIdError`."""
    problem = id_problem(value)
    if problem:
        raise UnsafeIdError(f"{what} {value!r} cannot be used: {problem}; fix it in the source table and import again")
    return value


def is_plain_name(name: str) -> bool:
    """True when ``name`` is usable unchanged as a file name on every common file system."""
    return (bool(_PLAIN.match(name)) and len(name) <= MAX_STEM and not name.endswith(".")
            and name.split(".")[0].upper() not in RESERVED)


def safe_name(value: str) -> str:
    """A portable file name for the ID ``value``: ``value`` itself when it is a plain name, else a
    sanitised form plus ``-`` and 10 hex digits of the ID's SHA-256 (distinct IDs, distinct names).

    The result never contains a path separator, is never ``.``/``..``/hidden/a reserved device
    name, and is at most ``MAX_STEM + 11`` characters of ``[A-Za-z0-9._-]``.
    """
    value = str(value)
    if is_plain_name(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    ascii_ = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    stem = _UNSAFE_CHAR.sub("_", ascii_).strip("._-")[:MAX_STEM - 12] or "id"
    if stem.split(".")[0].upper() in RESERVED:  # "con.txt" → "_con.txt-…": a device name before the first dot
        stem = f"_{stem}"
    return f"{stem}-{digest}"


class UniqueNames:
    """Names for IDs, unique within one output folder (case-insensitively), with the ID → name table."""

    def __init__(self) -> None:
        self.table: dict[str, str] = {}
        self._used: set[str] = set()

    def name(self, value: str) -> str:
        """The file-name stem for ``value`` (the same ID always gets the same name)."""
        value = str(value)
        if value in self.table:
            return self.table[value]
        base = safe_name(value)
        out, k = base, 2
        while out.casefold() in self._used:
            out, k = f"{base}_{k}", k + 1
        self._used.add(out.casefold())
        self.table[value] = out
        return out


def is_inside(path: str | Path, root: str | Path) -> bool:
    """True when ``path`` (resolved, symlinks followed) is ``root`` or lies under it."""
    p, r = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return p == r or r in p.parents
