"""Image-space calibration of the synthetic cohort: which uptake gives a wanted SBR *on the final image*.

The field measures a striatal binding ratio on the reconstructed, spatially normalised image:
SBR = mean over the atlas ROI / mean over the occipital ROI − 1 (``volkd.evaluate.sbr.sbr_features``,
AAL3 masks from :func:`volkd.data.atlas.striatum_masks` / :func:`~volkd.data.atlas.occipital_mask`).
Blur, misregistration and the reconstruction post-filter lower it (partial volume), so the
literature values of METHOD.md §2 are targets for that measurement, not for the uptake.

The forward model of :mod:`volkd.data.synth` is linear in the uptake except for the Poisson draw
(whose mean is the noise-free image), so the *expected* ROI means of a scan are linear in its
four region SBRs. :class:`RoiOperator` computes them with the adjoint of the forward model: each
normalised ROI mask is blurred (post-filter), cut to the head (counts exist only there) and
blurred again (intrinsic resolution plus the expected misregistration, i.e. the random shift
and rotation plus trilinear resampling, as a Gaussian), then dotted with the uptake's
components. Solving a 4×4 linear system gives the uptake SBRs whose expected measurement
equals a scan's target SBRs. The rest of this module matches class distributions: the
*measured* spread is the target spread, so the spread that age, visit-to-visit variability
and image noise add is taken out of the drawn one (:func:`typical_component`,
:func:`asymmetry_component`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage, optimize, stats

from volkd.data import atlas
from volkd.data.synth_anatomy import Anatomy

REGIONS = ("caudate_L", "caudate_R", "putamen_L", "putamen_R")
#: The ROIs of a measurement: the four striatal regions, then the occipital reference.
ROIS = (*REGIONS, "occipital")
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: Spacing (mm) of the resolutions at which ROI kernels are computed; linear in between.
NODE_STEP_MM = 0.5


def roi_masks(grid: tuple[int, int, int], affine: np.ndarray) -> list[np.ndarray]:
    """The SBR measurement's ROIs on ``grid`` (the masks ``sbr_features`` uses), in :data:`ROIS` order."""
    m = atlas.striatum_masks(grid, affine)
    return [np.asarray(m[r], dtype=bool) for r in REGIONS] + [np.asarray(atlas.occipital_mask(grid, affine), dtype=bool)]


def interpolation_variance(sd_vox: float) -> float:
    """Expected variance (voxels²) of trilinear interpolation's smoothing at a displacement of sd ``sd_vox``.

    Interpolating at fractional offset u averages two voxels with weights (1 − u, u): variance
    u(1 − u). Averaged over u = frac(d), d ~ N(0, sd); → 1/6 for sd ≫ 1 voxel.
    """
    if sd_vox <= 0:
        return 0.0
    d = np.linspace(-8 * sd_vox, 8 * sd_vox, 4001)
    u = d - np.floor(d)
    w = stats.norm.pdf(d, scale=sd_vox)
    return float(np.sum(w * u * (1 - u)) / np.sum(w))


def misregistration_sd(an: Anatomy, mask: np.ndarray, shift_mm_sd: float, rotation_deg_sd: float) -> np.ndarray:
    """Per-axis sd (mm) of the displacement of ``mask``'s centroid under the random misregistration.

    Rotation about the grid centre by small angles ω ~ N(0, sd) moves a point r (mm from the
    centre) by ω × r; each axis adds the shift sd.
    """
    idx = np.array(np.nonzero(mask), dtype=float)
    centroid = an.affine[:3, :3] @ idx.mean(axis=1) + an.affine[:3, 3]
    centre = an.affine[:3, :3] @ ((np.asarray(an.grid, float) - 1) / 2) + an.affine[:3, 3]
    rx, ry, rz = centroid - centre
    w2 = np.deg2rad(rotation_deg_sd) ** 2
    return np.sqrt(shift_mm_sd**2 + w2 * np.array([ry**2 + rz**2, rx**2 + rz**2, rx**2 + ry**2]))


@dataclass(frozen=True)
class _Node:
    """Kernels at one resolution, reduced to what a scan's system needs (leading axis: kernel family)."""

    base: np.ndarray  # (F, 5) ⟨k, brain + scalp level × scalp⟩
    hetero: np.ndarray  # (F, 5, K) ⟨k, basis_k⟩
    at_region: tuple[np.ndarray, ...]  # per striatal region s: (F, 5, n_s) k at the region's voxels


#: Kernel families of a noise node: expected mean, Poisson variance, then the sensitivities to a
#: shift along x, y, z (per mm) and to a rotation about x, y, z (per radian).
MEAN, POISSON, SENSITIVITY = 0, 1, slice(2, 8)


class RoiOperator:
    """Expected ROI means of one scan's image as a linear function of its four region SBRs (and their noise).

    ``an`` is the grid's :class:`volkd.data.synth.Anatomy`; the keyword arguments are the forward
    model's settings (resolved :class:`~volkd.data.synth.SynthConfig` fields;
    ``counts_per_voxel`` = expected counts of a voxel at reference uptake).
    """

    def __init__(self, an: Anatomy, *, scalp_level: float, heterogeneity: float, blur: bool, noise: bool,
                 misregister: bool, postfilter_fwhm_mm: float, shift_mm_sd: float, rotation_deg_sd: float,
                 counts_per_voxel: float) -> None:
        self.an = an
        self.heterogeneity = float(heterogeneity)
        self.blur, self.noise = bool(blur), bool(noise)
        self.post = float(postfilter_fwhm_mm or 0.0) if (blur and noise) else 0.0
        self.counts_per_voxel = float(counts_per_voxel)
        moving = misregister and (shift_mm_sd > 0 or rotation_deg_sd > 0)
        self.shift_sd = float(shift_mm_sd) if moving else 0.0
        self.rot_sd = float(np.deg2rad(rotation_deg_sd)) if moving else 0.0
        masks = roi_masks(an.grid, an.affine)
        self.weights = [m.astype(np.float64) / m.sum() for m in masks]
        self.mis_var: list[np.ndarray] = []  # per ROI, per axis (mm²): expected displacement + resampling
        for m in masks:
            sd = misregistration_sd(an, m, shift_mm_sd, rotation_deg_sd) if moving else np.zeros(3)
            interp = np.array([interpolation_variance(s / v) * v**2 for s, v in zip(sd, an.voxel_mm)]) if moving else np.zeros(3)
            self.mis_var.append(sd**2 + interp)
        head = np.zeros(int(np.prod(an.grid)), dtype=bool)
        head[an.head_idx] = True
        self.head = head.reshape(an.grid)
        self.background = (an.brain + an.scalp * np.float32(scalp_level)).astype(np.float64)
        self._nodes: dict[tuple[float, bool], _Node] = {}

    # ------------------------------------------------------------------ kernels
    def _gauss(self, x: np.ndarray, var_mm2: np.ndarray) -> np.ndarray:
        sigma = np.sqrt(np.maximum(var_mm2, 0.0)) / self.an.voxel_mm
        return ndimage.gaussian_filter(x, sigma=sigma, truncate=3.0, mode="constant") if sigma.max() > 0 else x

    def _positions(self) -> np.ndarray:
        """Voxel centres in mm relative to the grid centre (the rotation centre): (3, *grid)."""
        an = self.an
        idx = np.indices(an.grid, dtype=np.float64)
        return (idx - ((np.asarray(an.grid, float) - 1) / 2)[:, None, None, None]) * an.voxel_mm[:, None, None, None]

    def _kernels(self, fwhm: float, with_noise: bool) -> list[list[np.ndarray]]:
        """Per family (mean[, Poisson, 6 sensitivities]) the five ROIs' kernels over the uptake."""
        post = min(self.post, fwhm)
        intrinsic_var = (fwhm**2 - post**2) / FWHM_PER_SIGMA**2 if fwhm > post else 0.0
        post_var = np.full(3, (post / FWHM_PER_SIGMA) ** 2)
        families: list[list[np.ndarray]] = [[] for _ in range(8 if with_noise else 1)]
        pos = self._positions() if with_noise else None
        for w, mis in zip(self.weights, self.mis_var):
            # measurement in output space: counts exist only in the head, then the post-filter
            k_out = self._gauss(w, post_var) * self.head if self.noise else w
            pre = intrinsic_var + mis  # the image content before misregistration is G_intrinsic(uptake)
            families[MEAN].append(self._gauss(k_out, pre))
            if not with_noise:
                continue
            assert pos is not None
            g_post = self._gauss(w, post_var)
            families[POISSON].append(self._gauss(self.head * g_post**2, pre) / self.counts_per_voxel if self.noise else np.zeros_like(w))
            grad = np.gradient(k_out, *self.an.voxel_mm)  # content moved by d changes the mean by ⟨d·∇k, image⟩
            for a in range(3):
                families[2 + a].append(self._gauss(grad[a], pre))
            rx, ry, rz = pos
            for b, field in enumerate(((0 * rx, -rz, ry), (rz, 0 * ry, -rx), (-ry, rx, 0 * rz))):  # e_b × r
                families[5 + b].append(self._gauss(sum(f * g for f, g in zip(field, grad)), pre))
        return families

    def _node(self, fwhm: float, with_noise: bool = False) -> _Node:
        key = (round(float(fwhm), 6), bool(with_noise))
        if key not in self._nodes:
            an = self.an
            fam = self._kernels(key[0], with_noise)
            self._nodes[key] = _Node(
                base=np.array([[np.vdot(k, self.background) for k in ks] for ks in fam]),
                hetero=np.array([[[np.vdot(k, b) for b in an.basis] for k in ks] for ks in fam]),
                at_region=tuple(np.array([[k.ravel()[an.region_idx[s]] for k in ks] for ks in fam]) for s in REGIONS),
            )
        return self._nodes[key]

    def _interpolated(self, fwhm: float) -> _Node:
        if not self.blur:
            return self._node(0.0)
        lo = np.floor(fwhm / NODE_STEP_MM) * NODE_STEP_MM
        t = (fwhm - lo) / NODE_STEP_MM
        a, b = self._node(lo), self._node(lo + NODE_STEP_MM)
        mix = lambda x, y: (1 - t) * x + t * y  # noqa: E731
        return _Node(mix(a.base, b.base), mix(a.hetero, b.hetero), tuple(mix(x, y) for x, y in zip(a.at_region, b.at_region)))

    # ------------------------------------------------------------------ a scan's system
    def _system(self, node: _Node, beta: float, hetero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        an = self.an
        n0 = node.base + (self.heterogeneity / 2.0) * node.hetero @ np.asarray(hetero, dtype=np.float64)
        p = np.zeros(node.base.shape + (len(REGIONS),))
        for j, s in enumerate(REGIONS):
            phi = an.region_frac[s].astype(np.float64) * region_profile(an, s, beta)
            p[..., j] = node.at_region[j] @ phi
        return n0, p

    def system(self, fwhm: float, beta: float, hetero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(n0, P)``: expected ROI means = ``n0 + P @ sbr`` (5 ROIs, 4 region SBRs), up to the global scale."""
        n0, p = self._system(self._interpolated(float(fwhm)), beta, hetero)
        return n0[MEAN], p[MEAN]

    def expected_sbr(self, fwhm: float, beta: float, hetero: np.ndarray, sbr: dict[str, float]) -> dict[str, float]:
        """The expected measured SBRs of a scan rendered with uptake SBRs ``sbr``."""
        n0, p = self.system(fwhm, beta, hetero)
        means = n0 + p @ np.array([sbr[s] for s in REGIONS])
        return {s: float(means[i] / means[-1] - 1.0) for i, s in enumerate(REGIONS)}

    def solve(self, fwhm: float, beta: float, hetero: np.ndarray, target: dict[str, float]) -> dict[str, float]:
        """Uptake SBRs (≥ 0) whose expected measurement on the final image is ``target``."""
        n0, p = self.system(fwhm, beta, hetero)
        t = np.array([target[s] for s in REGIONS])
        a = p[:4] - (1.0 + t)[:, None] * p[4][None, :]
        b = (1.0 + t) * n0[4] - n0[:4]
        x = np.linalg.solve(a, b)
        return {s: float(max(v, 0.0)) for s, v in zip(REGIONS, x)}

    def noise_variance(self, fwhm: float, beta: float, hetero: np.ndarray, sbr: dict[str, float]) -> dict[str, float]:
        """Variance of the measured putamen and caudate SBR (mean of sides) and putamen L − R of a scan with uptake ``sbr``.

        Poisson counts (exact in expectation) plus the random shift and rotation to first order
        (sensitivities of the ROI means to each of the six rigid parameters). Not included: the
        random part of trilinear resampling's smoothing (its mean is in the expectation), which
        moves both sides together, so it adds to the region levels' scatter but not to L − R.
        Kernels are taken at the nearest :data:`NODE_STEP_MM` resolution.
        """
        f = round(float(fwhm) / NODE_STEP_MM) * NODE_STEP_MM if self.blur else 0.0
        n0, p = self._system(self._node(f, with_noise=True), beta, hetero)
        x = np.array([sbr[s] for s in REGIONS])
        vals = n0 + p @ x  # (8, 5)
        m, pois, sens = vals[MEAN], vals[POISSON], vals[SENSITIVITY]
        mo = m[4]
        col = {r: i for i, r in enumerate(ROIS)}
        sd_par = np.array([self.shift_sd] * 3 + [self.rot_sd] * 3)

        def var(weights: dict[str, float]) -> float:
            """Variance of Σ_r c_r·SBR_r: δSBR_r = (δM_r − (1 + SBR_r) δM_o) / M_o."""
            c = np.zeros(5)
            for r, wgt in weights.items():
                c[col[r]] += wgt / mo
                c[4] -= wgt * m[col[r]] / mo**2
            poisson = float(np.sum(c**2 * pois))
            mis = float(np.sum((sens @ c) ** 2 * sd_par**2))
            return poisson + mis

        return {"putamen": var({"putamen_L": 0.5, "putamen_R": 0.5}), "caudate": var({"caudate_L": 0.5, "caudate_R": 0.5}),
                "diff": var({"putamen_L": 1.0, "putamen_R": -1.0})}


def region_profile(an: Anatomy, region: str, beta: float) -> np.ndarray:
    """Relative uptake inside ``region`` at its voxels: putamen exp(β(t − ½)) normalised to mean 1, else 1."""
    if not region.startswith("putamen"):
        return np.ones(len(an.region_idx[region]), dtype=np.float32)
    prof = np.exp(np.float32(beta) * (an.putamen_t[region] - 0.5))
    prof /= np.sum(prof * an.region_frac[region]) / np.sum(an.region_frac[region])
    return prof


# --------------------------------------------------------------------------- class distributions
@dataclass(frozen=True)
class Moments:
    """Mean and sd of a distribution (a drawn component or a target)."""

    mean: float
    sd: float


def typical_component(target: Moments, *, age_mean: float, age_second: float, retest_sd: float, noise_sd: float,
                      border_fraction: float = 0.0, border: Moments | None = None) -> tuple[Moments, bool]:
    """The subject-level distribution of the non-borderline subjects that makes the *measured* class match ``target``.

    Measured = S · a · (1 + e) + n with S the subject level (a mixture: this component, and a
    fraction ``border_fraction`` of borderline subjects ``border``), a the age factor (moments
    ``age_mean``, ``age_second``), e the mean of two sides' visit noise (sd ``retest_sd``/√2) and
    n the image's measurement noise (sd ``noise_sd``). Returns the component and whether it was
    reachable (if not, its sd is floored at 5 % of the target's and the measured sd comes out larger).
    """
    p = float(border_fraction) if border is not None else 0.0
    m2_factor = age_second * (1.0 + retest_sd**2 / 2.0)
    mean_s = target.mean / age_mean
    second_s = (target.sd**2 + target.mean**2 - noise_sd**2) / m2_factor
    b_mean, b_second = (border.mean, border.sd**2 + border.mean**2) if border is not None else (0.0, 0.0)
    mean_t = (mean_s - p * b_mean) / (1.0 - p)
    var_t = (second_s - p * b_second) / (1.0 - p) - mean_t**2
    floor = (0.05 * target.sd) ** 2
    return Moments(mean_t, float(np.sqrt(max(var_t, floor)))), bool(var_t >= floor)


def gamma_draw(rng: np.random.Generator, m: Moments) -> float:
    """A gamma draw with the given mean and sd (non-negative indices such as asymmetry)."""
    k = (m.mean / m.sd) ** 2
    return float(rng.gamma(k, m.sd**2 / m.mean))


@dataclass(frozen=True)
class NoiseModel:
    """Measurement noise of an image's SBRs: variance ``v0 + v1·level + v2·level²`` per quantity.

    Quantities: ``putamen`` and ``caudate`` (mean of the sides) and ``diff`` (putamen L − R),
    in SBR units; ``level`` is the scan's putamen (for ``diff``) or region SBR. The linear term
    is count noise (counts grow with uptake), the quadratic one misregistration.
    """

    putamen: tuple[float, float, float]
    caudate: tuple[float, float, float]
    diff: tuple[float, float, float]

    def var(self, quantity: str, level: np.ndarray | float) -> np.ndarray:
        """Noise variance of ``quantity`` at ``level``."""
        v0, v1, v2 = getattr(self, quantity)
        lv = np.maximum(level, 0.0)
        return v0 + v1 * lv + v2 * np.square(lv)

    @staticmethod
    def fit(level: np.ndarray, variance: np.ndarray) -> tuple[float, float, float]:
        """Non-negative least squares of per-scan variances on (1, level, level²), relative errors."""
        lv = np.maximum(np.asarray(level, float), 0.0)
        v = np.asarray(variance, float)
        design = np.stack([np.ones_like(lv), lv, np.square(lv)], axis=1)
        w = 1.0 / np.maximum(v, 1e-12)
        coef, _ = optimize.nnls(design * w[:, None], v * w)
        return float(coef[0]), float(coef[1]), float(coef[2])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {"putamen_var": list(self.putamen), "caudate_var": list(self.caudate), "diff_var": list(self.diff)}


@dataclass(frozen=True)
class AsymmetryModel:
    """How a class's putamen asymmetry index is generated and measured (for :func:`asymmetry_component`)."""

    level: Moments  # typical subjects' putamen SBR
    border_level: Moments | None  # borderline subjects' putamen SBR
    border_fraction: float
    border_asym: Moments | None  # borderline subjects' asymmetry (None: the typical distribution)
    age: tuple[float, float]  # mean, sd (years)
    age_slope: float
    reference_age: float
    retest_sd: float
    min_level: float = 0.12
    max_asym: float = 1.5


def _gamma_ppf(u: np.ndarray, m: Moments) -> np.ndarray:
    k = (m.mean / m.sd) ** 2
    return stats.gamma.ppf(u, k, scale=m.sd**2 / m.mean)


def measured_asymmetry(comp: Moments, model: AsymmetryModel, noise: NoiseModel, n: int = 6000, seed: int = 0) -> np.ndarray:
    """Monte-Carlo sample of the *measured* asymmetry index of a class whose typical subjects draw from ``comp``.

    Fixed random numbers for a seed, so the result is smooth in ``comp`` (common random numbers).
    """
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((6, n))
    u = rng.uniform(1e-9, 1 - 1e-9, size=(2, n))
    border = (u[1] < model.border_fraction) if model.border_level is not None else np.zeros(n, dtype=bool)
    level = model.level.mean + model.level.sd * z[0]
    if model.border_level is not None:
        level = np.where(border, model.border_level.mean + model.border_level.sd * z[0], level)
    level = np.maximum(level, model.min_level)
    age = model.age[0] + model.age[1] * z[1]
    level = level * np.maximum(1.0 - model.age_slope * (age - model.reference_age), 0.5)
    asym = _gamma_ppf(u[0], comp)
    if model.border_asym is not None and border.any():
        asym = np.where(border, _gamma_ppf(u[0], model.border_asym), asym)
    asym = np.minimum(asym, model.max_asym)
    left = level * (1 + asym / 2) * (1 + model.retest_sd * z[2])
    right = level * (1 - asym / 2) * (1 + model.retest_sd * z[3])
    truth = (left + right) / 2
    diff = left - right + np.sqrt(noise.var("diff", truth)) * z[4]
    mean = truth + np.sqrt(noise.var("putamen", truth)) * z[5]
    return np.abs(diff) / np.maximum(mean, 1e-3)


def asymmetry_component(target: Moments, model: AsymmetryModel, noise: NoiseModel, seed: int = 0) -> tuple[Moments, bool]:
    """The gamma distribution of typical subjects' asymmetry so the *measured* index's mean and sd match ``target``.

    Solved on a Monte-Carlo sample of the generator and measurement noise
    (:func:`measured_asymmetry`). Returns the component and whether it matches within 2 %
    (if not, the closest one found: image noise alone can exceed the target).
    """
    def resid(x: np.ndarray) -> np.ndarray:
        v = measured_asymmetry(Moments(float(np.exp(x[0])), float(np.exp(x[1]))), model, noise, seed=seed)
        return np.array([v.mean() / target.mean - 1.0, v.std() / target.sd - 1.0])

    x0 = np.log([target.mean, target.sd])
    # shape k = mean²/sd² kept within [0.05, 400] so the gamma stays well defined
    lo, hi = np.array([np.log(1e-3), np.log(1e-3)]), np.array([np.log(2.0), np.log(2.0)])
    sol = optimize.least_squares(resid, x0, bounds=(lo, hi), x_scale=1.0, diff_step=1e-3, xtol=1e-6, ftol=1e-6)
    m, sd = float(np.exp(sol.x[0])), float(np.exp(sol.x[1]))
    sd = float(np.clip(sd, m / 20.0, m / np.sqrt(0.05)))
    return Moments(m, sd), bool(np.max(np.abs(resid(np.log([m, sd])))) <= 0.02)


def age_factor_moments(age_mean: float, age_sd: float, slope: float, reference_age: float) -> tuple[float, float]:
    """E[a] and E[a²] of the age factor a = 1 − slope·(age − reference) for age ~ N(mean, sd)."""
    m = 1.0 - slope * (age_mean - reference_age)
    return m, m**2 + (slope * age_sd) ** 2


def as_dict(m: Moments) -> dict[str, Any]:
    """JSON-ready moments."""
    return {"mean": round(float(m.mean), 6), "sd": round(float(m.sd), 6)}
