"""Atomic writes: outputs appear complete or not at all (temp path, then rename).

Temp names carry the writer's pid (``.<name>.tmp-<pid>-<random>``, ``.<name>.import-<pid>-…``)
so that :func:`clean_stale` can remove what a killed process left behind. ``--force`` replaces
only an output volkd recognises as its own of the same kind (:func:`check_output`), never an
input of the command, a folder holding one, or a folder of someone else's files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from volkd.errors import OutputError, OutputExistsError

#: The file that marks a folder as volkd output of each kind (``--force`` replaces only these).
OUTPUT_MARKERS: dict[str, tuple[str, ...]] = {
    "cohort": ("cohort.json",),
    "study": ("study.json",),
    "projection": ("projection.json",),
    "explain": ("explain.csv",),
    "export": ("export.json",),
}
#: Tags of temp siblings (``.<name>.<tag>-<pid>-…``) that :func:`clean_stale` may remove.
TEMP_TAGS = ("tmp", "import", "old")
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<tag>tmp|import|old)-(?:(?P<pid>\d+)(?:-|\Z))?")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_prefix(path: Path, tag: str = "tmp") -> str:
    """Prefix of a temp sibling of ``path`` made by this process: ``.<name>.<tag>-<pid>-``."""
    return f".{path.name}.{tag}-{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` runs on this machine (or when that cannot be told: Windows)."""
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate it there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, owned by someone else
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def clean_stale(path: str | Path, held: bool = False) -> list[Path]:
    """Remove the temp siblings of ``path`` (``.<name>.tmp-*``, ``.import-*``, ``.old-*``) left by
    dead processes; ``held=True`` (the caller holds ``path``'s lock) removes them whatever their pid.

    An interrupted replace (``path`` gone, its ``.old-*`` present) is undone: the old output is
    put back. Returns what was removed.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return []
    removed: list[Path] = []
    for p in sorted(parent.iterdir()):
        m = _TEMP.match(p.name)
        if not m or m.group("name") != path.name:
            continue
        pid = m.group("pid")
        if pid is None and not held:
            continue  # written by an older volkd: only safe to remove under the lock
        if pid is not None and not held and pid_alive(int(pid)):
            continue
        if m.group("tag") == "old" and not path.exists() and p.is_dir():
            os.replace(p, path)  # killed between the two renames of atomic_dir: restore the old output
            continue
        _remove(p)
        removed.append(p)
    return removed


def clean_stale_inside(root: str | Path) -> list[Path]:
    """Remove every volkd temp file/folder (``.*.tmp-*``, ``.*.import-*``) anywhere under ``root``.

    Only call this while holding ``root``'s lock, before starting any worker: then none is live.
    """
    removed: list[Path] = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(root):
        for name in list(dirnames) + filenames:
            m = _TEMP.match(name)
            if m and m.group("tag") in ("tmp", "import"):
                p = Path(dirpath) / name
                _remove(p)
                removed.append(p)
                if name in dirnames:
                    dirnames.remove(name)
    return removed


def _overlaps(out: Path, source: Path) -> bool:
    o, s = Path(os.path.realpath(out)), Path(os.path.realpath(source))
    return o == s or o in s.parents


#: Files volkd reads as input: never replaced by an output written inside an input folder.
INPUT_FILES = (".nii", ".nii.gz", ".dcm", ".npy", ".npz", ".pt", "cohort.json", "scans.csv", "collection.csv")


def check_sources(path: str | Path, sources: Iterable[str | Path]) -> None:
    """Refuse an output that is one of the command's inputs, a folder holding one, or an existing
    scan/cohort/checkpoint file inside an input folder."""
    path = Path(path)
    for s in sources:
        if s is None:
            continue
        if _overlaps(path, Path(s)):
            what = "is this command's input" if os.path.realpath(path) == os.path.realpath(s) else f"holds this command's input {s}"
            raise OutputError(f"{path}: {what}; volkd never writes over its own input: choose another output path")
        inside = Path(os.path.realpath(s)) in Path(os.path.realpath(path)).parents
        if inside and path.is_file() and path.name.lower().endswith(INPUT_FILES):
            raise OutputError(f"{path}: is a file of this command's input {s}; volkd never writes over its own input: "
                              "choose another output path")


def is_output_of(path: Path, kind: str) -> bool:
    """True when folder ``path`` is a volkd output of ``kind`` (holds that kind's marker file)."""
    return all((path / m).is_file() for m in OUTPUT_MARKERS[kind])


def check_output(path: str | Path, force: bool, kind: str | None = None, sources: Iterable[str | Path] = ()) -> None:
    """May ``path`` be written? Never over an input (``sources``) or a folder holding one; an existing
    ``path`` only with ``force``, and then only when it is an empty folder or volkd output of ``kind``
    (``None``: a single file, replaced with ``force`` unless it is a folder)."""
    path = Path(path)
    check_sources(path, sources)
    if not (path.exists() or path.is_symlink()):
        return
    if not force:
        raise OutputExistsError(f"{path} already exists; choose another output path or pass --force to replace it")
    if kind is None:
        if path.is_dir():
            raise OutputError(f"{path}: is a folder; --force replaces a file, never a folder: choose a file name")
        return
    if not path.is_dir():
        raise OutputError(f"{path}: is a file, not a volkd {kind} folder; --force does not replace it: choose another output path")
    if any(path.iterdir()) and not is_output_of(path, kind):
        found = ", ".join(sorted(p.name for p in path.iterdir())[:5])
        raise OutputError(f"{path}: is not a volkd {kind} folder (no {' / '.join(OUTPUT_MARKERS[kind])}; it holds {found}…); "
                          "--force replaces only volkd's own outputs: choose another output path or empty it yourself")


def check_can_write(path: Path, force: bool) -> None:
    """Refuse to overwrite an existing ``path`` unless ``force`` is set."""
    if (path.exists() or path.is_symlink()) and not force:
        raise OutputExistsError(
            f"{path} already exists; choose another output path or pass --force to replace it"
        )


def probe_writable(path: str | Path) -> None:
    """Fail now, with :class:`OutputError`, when ``path`` (a file or folder to create) cannot be written:
    a file in the way of its folder, no permission, or a read-only file system. Creates nothing."""
    path = Path(path)
    anc = path.parent if str(path.parent) else Path(".")
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise OutputError(f"{path}: cannot be created because {anc} is a file, not a folder; choose another output path")
    if hasattr(os, "statvfs"):
        with contextlib.suppress(OSError):
            if os.statvfs(anc).f_flag & getattr(os, "ST_RDONLY", 1):
                raise OutputError(f"{path}: {anc} is on a read-only file system; choose a writable location")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: permission denied to write in {anc}; choose a location you can write to")


@contextlib.contextmanager
def atomic_dir(path: str | Path, force: bool = False, kind: str | None = None,
               sources: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield a temp directory next to ``path``; on success rename it to ``path``.

    On any error the temp directory is removed and ``path`` is left untouched. With ``kind``,
    an existing ``path`` is replaced (``force``) only when :func:`check_output` allows it.
    """
    path = Path(path)
    if kind is None:
        check_sources(path, sources)
        check_can_write(path, force)
    else:
        check_output(path, force, kind, sources)
    probe_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual permissions
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path, force: bool = True, mode: str = "w") -> Iterator[Any]:
    """Open a temp file next to ``path`` for writing; rename it over ``path`` on success."""
    path = Path(path)
    check_can_write(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any, force: bool = True) -> None:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_file(path, force=force) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def write_text(path: str | Path, text: str, force: bool = True) -> None:
    """Write ``text`` atomically."""
    with atomic_file(path, force=force) as fh:
        fh.write(text)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
