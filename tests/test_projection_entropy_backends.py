"""The entropy projection's two backends (numba: `volkd[fast]`; numpy) give bit-identical results."""

from __future__ import annotations

import numpy as np
import pytest

from volkd.errors import ConfigError
from volkd.projection import ProjectionSpec, project
from volkd.projection import methods
from volkd.projection.methods import ENTROPY_BACKEND_ENV, entropy_backend, entropy_image, slice_entropies

numba_installed = methods._numba_kernels() is not None
needs_numba = pytest.mark.skipif(not numba_installed, reason="numba not installed (pip install 'volkd[fast]')")


def _cases() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.standard_normal((2, 12, 18, 20)), axis=1), axis=3)
    return [
        rng.gamma(2.0, 1.5, size=(3, 10, 12, 14)),           # non-cubic, skewed
        smooth,                                               # neighbours share grey levels
        rng.integers(0, 3, size=(2, 9, 9, 9)),                # three levels only
        np.full((1, 5, 6, 7), 2.5),                           # constant: every H_t = 0
        rng.standard_normal((1, 3, 4, 300)),                  # many slices along the last axis
        rng.standard_normal((1, 290, 260, 3)) * 1e-3 + 7,     # > 65,535 pixels per slice, small range
        np.linspace(-1, 1, 2 * 7 * 8 * 9).reshape(2, 7, 8, 9),  # exact bin edges (a ramp)
        np.stack([np.zeros((255, 257)), rng.random((255, 257))], axis=-1)[None],  # 65,535 pixels in one bin (uint16 limit)
    ]


@needs_numba
@pytest.mark.parametrize("case", range(8))
def test_numba_and_numpy_entropies_are_bit_identical(case: int) -> None:
    vols = _cases()[case].astype(np.float32)
    for axis in range(3):
        np.testing.assert_array_equal(slice_entropies(vols, axis, backend="numba"), slice_entropies(vols, axis, backend="numpy"))
        a, b = entropy_image(vols, axis, backend="numba"), entropy_image(vols, axis, backend="numpy")
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@needs_numba
def test_numba_path_matches_numpy_on_non_finite_volumes() -> None:
    """A NaN/inf volume takes the numpy code inside the numba path (no out-of-range bins)."""
    vols = np.random.default_rng(1).standard_normal((3, 6, 7, 8)).astype(np.float32)
    vols[0, 1, 2, 3] = np.nan
    vols[1, 0, 0, 0] = np.inf
    with np.errstate(all="ignore"):
        for axis in range(3):
            np.testing.assert_array_equal(slice_entropies(vols, axis, backend="numba"),
                                          slice_entropies(vols, axis, backend="numpy"))
        mixed = slice_entropies(vols, 2, backend="numba")
    np.testing.assert_array_equal(mixed[2:], slice_entropies(vols[2:], 2, backend="numpy"))


@needs_numba
def test_project_uses_the_backend_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    vols = np.random.default_rng(2).gamma(2.0, 1.0, size=(4, 16, 16, 16)).astype(np.float32)
    spec = ProjectionSpec(method="entropy", views=["axial", "coronal", "sagittal"], fusion="early")
    monkeypatch.setenv(ENTROPY_BACKEND_ENV, "numpy")
    assert entropy_backend() == "numpy"
    slow = project(vols, spec)
    monkeypatch.setenv(ENTROPY_BACKEND_ENV, "auto")
    assert entropy_backend() == "numba"
    np.testing.assert_array_equal(project(vols, spec), slow)


def test_backend_choice_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENTROPY_BACKEND_ENV, raising=False)
    assert entropy_backend() == ("numba" if numba_installed else "numpy")
    assert entropy_backend("numpy") == "numpy"
    with pytest.raises(ConfigError, match=r"entropy backend 'cuda'.*choose one of auto, numpy, numba"):
        entropy_backend("cuda")
    monkeypatch.setenv(ENTROPY_BACKEND_ENV, "fortran")
    with pytest.raises(ConfigError, match=ENTROPY_BACKEND_ENV):
        entropy_backend()


def test_without_numba_auto_falls_back_and_numba_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulates an install without the `fast` extra."""
    monkeypatch.delenv(ENTROPY_BACKEND_ENV, raising=False)
    monkeypatch.setattr(methods, "_numba_kernels", lambda: None)
    assert entropy_backend() == "numpy"
    with pytest.raises(ConfigError, match=r"numba is not installed; pip install 'volkd\[fast\]'"):
        entropy_backend("numba")
    vols = np.random.default_rng(3).gamma(2.0, 1.0, size=(2, 8, 9, 10)).astype(np.float32)
    out = project(vols, ProjectionSpec(method="entropy", views=["axial"]))  # runs on numpy
    assert out.shape == (2, 1, 9, 8) and np.isfinite(out).all()
