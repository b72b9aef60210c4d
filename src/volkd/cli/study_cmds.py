"""study commands: run, init-config (registered on the shared typer app)."""

from volkd.cli.app import app  # noqa: F401
