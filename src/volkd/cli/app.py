"""The typer application object that every command module registers on."""

import typer

from volkd import __version__

app = typer.Typer(
    name="volkd",
    help="volkd: 3D-to-2D knowledge distillation for volumetric neuroimaging classification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"volkd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """volkd: 3D-to-2D knowledge distillation for volumetric neuroimaging classification."""
