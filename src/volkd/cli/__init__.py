"""The ``volkd`` command: thin typer commands over the library's functions.

Each topic registers its commands on :data:`app` from its own module. Errors that are the
user's to fix (:class:`volkd.errors.VolkdError`) and OS errors (permission, read-only, disk full,
missing path) print as one line with exit code 2; usage errors keep click's own message and
code; ``volkd run`` exits 3 when a trial failed.

The command modules import the library (torch, scikit-learn, MONAI behind it) inside each
command, not at their top: ``volkd --help`` then imports ~0.4 s of modules instead of ~3 s
(measured on 2 busy CPU cores). That is the one place volkd defers its own imports on purpose.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

from volkd.cli.app import app
from volkd.errors import VolkdError, os_error_message

# Importing the command modules registers their commands on ``app``.
from volkd.cli import data_cmds, import_cmds, synth_cmds, split_cmds, project_cmds, train_cmds, study_cmds, use_cmds  # noqa: F401,E402

err_console = Console(stderr=True)


def _error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)


def _click_modules() -> tuple[object, ...]:
    """The click modules whose exceptions usage errors may come from (typer vendors its own copy)."""
    mods = []
    for name in ("typer._click", "click"):
        mod = sys.modules.get(name)
        if mod is not None:
            mods.append(mod)
    return tuple(mods)


def main() -> None:
    """Console entry point."""
    try:
        rc = app(standalone_mode=False)
    except VolkdError as e:
        _error(escape(str(e)))
        sys.exit(2)
    except OSError as e:
        _error(escape(os_error_message(e)))
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click's own usage errors
        for click in _click_modules():
            if isinstance(e, click.exceptions.ClickException):  # type: ignore[attr-defined]
                e.show()  # type: ignore[attr-defined]
                sys.exit(e.exit_code)  # type: ignore[attr-defined]
            if isinstance(e, click.exceptions.Abort):  # type: ignore[attr-defined]
                sys.exit(1)
        raise
    if isinstance(rc, int) and rc != 0:
        sys.exit(rc)


__all__ = ["app", "main"]
