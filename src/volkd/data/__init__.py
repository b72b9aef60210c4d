"""Data layer: cohorts on disk, importers, the synthetic DaTscan cohort, splits, normalisation."""

from volkd.data.cohort import Cohort, CohortMeta

__all__ = ["Cohort", "CohortMeta"]
