"""train commands (registered on the shared typer app)."""

from volkd.cli.app import app  # noqa: F401
