"""Exceptions that carry a message meant for the user (file, field and what to do)."""

from __future__ import annotations

import errno


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
