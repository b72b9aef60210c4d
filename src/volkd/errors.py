"""Exceptions that carry a message meant for the user (file, field and what to do)."""

from __future__ import annotations


class VolkdError(Exception):
    """Base class: the CLI prints these as one clear message, never as a traceback."""


class CohortError(VolkdError):
    """A cohort directory or its contents are invalid."""


class ScanImportError(VolkdError):
    """A scan or labels file could not be imported."""


class LeakageError(VolkdError):
    """A subject appears in more than one partition of a split."""


class ConfigError(VolkdError):
    """A configuration (spec, study config, CLI option) is invalid."""


class OutputExistsError(VolkdError):
    """An output already exists and would be overwritten without --force."""
