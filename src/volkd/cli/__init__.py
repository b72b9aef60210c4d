"""The ``volkd`` command: thin typer commands over the library's functions.

Each topic registers its commands on :data:`app` from its own module; errors that are
the user's to fix (:class:`volkd.errors.VolkdError`) print as one message, exit code 2.

The command modules import the library (torch, scikit-learn, MONAI behind it) inside each
command, not at their top: ``volkd --help`` then imports ~0.4 s of modules instead of ~3 s
(measured on 2 busy CPU cores). That is the one place volkd defers its own imports on purpose.
"""

from __future__ import annotations

import sys

from rich.console import Console

from volkd.cli.app import app
from volkd.errors import VolkdError

# Importing the command modules registers their commands on ``app``.
from volkd.cli import data_cmds, import_cmds, synth_cmds, split_cmds, project_cmds, train_cmds, study_cmds, use_cmds  # noqa: F401,E402

err_console = Console(stderr=True)


def main() -> None:
    """Console entry point."""
    try:
        app(standalone_mode=False)
    except VolkdError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click's own usage errors
        import click  # here, not at the top: typer does not load click, so --help need not either

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise


__all__ = ["app", "main"]
