"""volkd: 3D-to-2D knowledge distillation for volumetric neuroimaging classification.

The package reads like the pipeline: ``data`` → ``projection`` → ``models`` →
``distill`` → ``train`` → ``evaluate`` → ``experiment`` → ``report``; ``cli`` is a
thin typer layer over those functions.
"""

__version__ = "0.1.0"

from volkd.errors import VolkdError  # noqa: E402

__all__ = ["VolkdError", "__version__"]
