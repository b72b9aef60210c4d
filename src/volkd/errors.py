"""Exceptions that carry a message meant for the user (file, field and what to do), the one
wording of pydantic validation errors, and the field validators every spec and config shares."""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError


class VolkdError(Exception):
    """Base class: the CLI prints these as one clear message, never as a traceback."""


class CohortError(VolkdError):
    """A cohort directory or its contents are invalid."""


class CohortChangedError(CohortError):
    """A cohort's files no longer match the content hashes recorded when it was written."""


class ScanImportError(VolkdError):
    """A scan or labels file could not be imported."""


class LeakageError(VolkdError):
    """A subject appears in more than one partition of a split."""


class ConfigError(VolkdError):
    """A configuration (spec, study config, CLI option) is invalid."""


class OutputExistsError(VolkdError):
    """An output already exists and would be overwritten without --force."""


class OutputError(VolkdError):
    """An output cannot be written there (not a folder, no permission, read-only, disk full) or
    must not be replaced (a source, or a folder volkd did not make)."""


class LockedError(VolkdError):
    """Another volkd process is writing the same output folder."""


_OS_HINTS = {
    errno.EACCES: "permission denied; choose a location you can write to (or fix its permissions)",
    errno.EPERM: "operation not permitted; choose a location you can write to",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.ENOSPC: "no space left on the device; free some space or choose another disk",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another disk",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a path component is a file, not a folder; choose another location",
    errno.EISDIR: "is a folder where a file was expected; choose a file name",
    errno.EEXIST: "already exists and is in the way (a file where a folder is needed, or the reverse)",
    errno.ENAMETOOLONG: "file name too long; choose a shorter path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) and retry",
    errno.EIO: "input/output error on the device; check the disk",
}


def os_error_message(e: OSError) -> str:
    """One line for an OS error: the path(s) involved, what happened and what to do."""
    where = " → ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    what = _OS_HINTS.get(e.errno or -1) or (e.strerror or type(e).__name__).lower()
    detail = f" [{errno.errorcode.get(e.errno, e.errno)}]" if e.errno else ""
    return f"{where + ': ' if where else ''}{what}{detail}"


# --------------------------------------------------------------- wording of validation errors
def describe_validation_error(e: ValidationError, model: type[BaseModel] | None = None, *, noun: str = "field",
                              prefix: str = "") -> str:
    """One line for pydantic's errors, ``<noun> 'a.b': message`` per bad value, joined by ``'; '``.

    A validator's own message is kept as written; pydantic's built-in messages get the value
    (``(got ...)``); an unknown key lists the keys allowed at its place in ``model``.
    ``prefix`` is put before every location (``training.`` when a sub-config is checked alone).
    """
    parts = []
    for err in e.errors():
        loc = prefix + ".".join(str(x) for x in err["loc"]) or "(root)"
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, err["loc"][:-1]) if model is not None else None
            where = f" under '{prefix}{'.'.join(str(x) for x in err['loc'][:-1])}'" if len(err["loc"]) > 1 else ""
            allowed = f"; allowed {noun}s{where}: {', '.join(parent.model_fields)}" if parent is not None else ""
            parts.append(f"unknown {noun} '{loc}'{allowed}")
        elif err["type"] == "missing":
            parts.append(f"{noun} '{loc}': required but missing")
        elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
            parts.append(f"{noun} '{loc}': {err['ctx']['error']}")
        else:
            parts.append(f"{noun} '{loc}': {err['msg']} (got {_short_repr(err.get('input'))})")
    return "; ".join(parts)


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the value at ``loc`` (list indices skipped), if any."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        inner = getattr(ann, "__args__", (ann,))
        nxt = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model


# ------------------------------------------------------------------- shared field validators
def one_of(what: str, allowed: Sequence[str]) -> Callable[[Any], Any]:
    """A field validator: the value (or each item of a list; ``None`` passes) must be one of
    ``allowed``, else ``unknown <what> 'x'; choose one of a, b, c``.
    Use as ``_x = field_validator("x")(one_of("x", X_CHOICES))``."""
    def check(v: Any) -> Any:
        for x in v if isinstance(v, list) else [v]:
            if x is not None and x not in allowed:
                raise ValueError(f"unknown {what} {x!r}; choose one of {', '.join(allowed)}")
        return v
    return check


def listed_once(what: str, key: Callable[[Any], Any] = lambda x: x) -> Callable[[list[Any]], list[Any]]:
    """A field validator: no two items of the list share ``key(item)``, else ``<what> listed twice: [...]``."""
    def check(v: list[Any]) -> list[Any]:
        keys = [key(x) for x in v]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"{what} listed twice: {twice}")
        return v
    return check


def at_least(low: float, note: str = "") -> Callable[[Any], Any]:
    """A field validator: the value (or ``None``) must be ``≥ low``, else ``must be ≥ low<note>, got v``."""
    def check(v: Any) -> Any:
        if v is not None and v < low:
            raise ValueError(f"must be ≥ {low}{note}, got {v}")
        return v
    return check
