"""2D projections of volumes: ``ProjectionSpec`` + ``project(volumes, spec)``.

See docs/projections.md for each method's formula, the views' orientation and the presets.
"""

from volkd.projection.methods import METHODS, orient, rank_pool_weights, unorient
from volkd.projection.project import project, resize_images
from volkd.projection.reference import resolve_reference
from volkd.projection.spec import FUSIONS, PRESETS, VIEWS, ProjectionSpec, image_shape, preset

__all__ = [
    "FUSIONS", "METHODS", "PRESETS", "VIEWS", "ProjectionSpec", "image_shape", "orient", "preset",
    "project", "rank_pool_weights", "resize_images", "resolve_reference", "unorient",
]
