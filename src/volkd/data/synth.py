"""A realistic DaTscan-like synthetic cohort (PD vs control) in MNI space.

Anatomy comes from the AAL3 atlas (:mod:`volkd.data.atlas`); each scan is rendered as
non-specific brain uptake (occipital reference = 1) plus caudate and putamen uptake, then
blurred (scanner resolution), misregistered (imperfect spatial normalisation),
Poisson-count noised and globally scaled. The class distributions of striatal binding ratios
(SBR) of METHOD.md §2 are what the field *measures on the final images*, so by default
(``calibrate``) each scan's uptake is solved for (:mod:`volkd.data.synth_calibrate`) so that
the SBRs measured with the atlas ROIs on its image follow them. Every parameter lives in
:class:`SynthConfig`; ``docs/synthetic.md`` documents the model. Same seed → byte-identical cohort.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from scipy import ndimage

from volkd.data import synth_calibrate as cal
from volkd.data.synth_anatomy import Anatomy, anatomy
from volkd.data.cohort import Cohort, CohortMeta
from volkd.errors import ConfigError, at_least, describe_validation_error

CLASS_NAMES = ["control", "PD"]
REGIONS = cal.REGIONS
#: PPMI imaging visits and their nominal time from baseline (years).
VISIT_YEARS = {"BL": 0.0, "V04": 1.0, "V06": 2.0, "V08": 3.0, "V10": 4.0, "V12": 5.0}
#: Mean age of the PPMI cohorts: the SBR table of METHOD.md §2 holds at this age.
REFERENCE_AGE = 61.0


class RegionStats(BaseModel):
    """Mean ± sd of a region's SBR for one class."""

    model_config = ConfigDict(extra="forbid")
    mean: float
    sd: float


class Contrast(BaseModel):
    """Region SBR distributions (baseline, at the reference age) for both classes.

    Putamen and caudate SBRs are the mean of the left and right region; the asymmetry index is
    |L − R| / mean(L, R) of the putamen SBRs. With ``calibrate`` these are the distributions
    *measured* on the final images (atlas ROIs, occipital reference), as in the literature.
    """

    model_config = ConfigDict(extra="forbid")
    putamen_control: RegionStats
    putamen_pd: RegionStats
    caudate_control: RegionStats
    caudate_pd: RegionStats
    #: putamen L/R asymmetry index |L−R|/mean(L,R): mean ± sd (gamma distributed)
    asym_control: RegionStats = RegionStats(mean=0.07, sd=0.08)
    asym_pd: RegionStats = RegionStats(mean=0.20, sd=0.16)
    #: where the values come from
    source: str = ""


#: FP-CIT SPECT (DaTscan): METHOD.md §2 (PPMI putamen, clinical caudate, asymmetry).
SPECT_CONTRAST = Contrast(
    putamen_control=RegionStats(mean=1.81, sd=0.30), putamen_pd=RegionStats(mean=0.66, sd=0.30),
    caudate_control=RegionStats(mean=3.15, sd=0.54), caudate_pd=RegionStats(mean=2.03, sd=0.71),
    source="METHOD.md §2: putamen PPMI baseline, caudate clinical FP-CIT, putamen L/R asymmetry; measured on images",
)
#: 18F-AV133 (VMAT2) PET-like, SUVR − 1 with occipital reference. Reductions in PD from the
#: literature: Okamura et al., J Nucl Med 2010;51:223 (18F-AV-133: −70 % anterior, −81 %
#: posterior putamen, −48 % caudate) and Bohnen et al., JCBFM 2006;26:1198 (11C-DTBZ: −68 %,
#: −77 %, −44 %); whole putamen −70 %, caudate −45 %. The control levels (caudate ≈ putamen,
#: as for VMAT2) and all sds are volkd's choice (sds: the SPECT table's relative spread).
PET_CONTRAST = Contrast(
    putamen_control=RegionStats(mean=2.00, sd=0.33), putamen_pd=RegionStats(mean=0.60, sd=0.27),
    caudate_control=RegionStats(mean=2.20, sd=0.38), caudate_pd=RegionStats(mean=1.21, sd=0.42),
    source="AV133 PET: PD reductions from Okamura 2010 (J Nucl Med 51:223) and Bohnen 2006 (JCBFM 26:1198); "
           "control levels and sds are volkd's choice",
)

#: Difficulty presets: fraction of borderline subjects, counts per ml at reference uptake
#: (multiplied by 10 for PET), misregistration sd (mm, degrees), and whether the contrast is
#: calibrated on the image. ``hard`` is the cohort of volkd ≤ 0.x's ``default`` (SBRs set
#: before blur, so image contrast ≈ half the literature's), kept for research.
DIFFICULTY = {
    "easy": {"borderline_fraction": 0.02, "counts_per_ml": 600.0, "shift_mm_sd": 0.25, "rotation_deg_sd": 0.25, "calibrate": True},
    "default": {"borderline_fraction": 0.05, "counts_per_ml": 240.0, "shift_mm_sd": 0.25, "rotation_deg_sd": 0.25, "calibrate": True},
    "hard": {"borderline_fraction": 0.20, "counts_per_ml": 60.0, "shift_mm_sd": 3.0, "rotation_deg_sd": 3.0, "calibrate": False},
}
MODALITY = {
    "spect": {"fwhm_mm": (8.0, 12.0), "postfilter_fwhm_mm": 7.0, "counts_factor": 1.0, "scalp_level": 0.25, "description": "Reconstructed DaTSCAN"},
    "pet": {"fwhm_mm": (4.5, 5.5), "postfilter_fwhm_mm": 3.0, "counts_factor": 10.0, "scalp_level": 0.35, "description": "AV133 SUVR"},
}
#: Age at baseline (mean, sd; years) per class, PPMI-like.
AGE = {"PD": (61.5, 9.7), "control": (60.8, 11.0)}
#: Borderline subjects: where they sit between the class means (fraction of the way from the
#: control mean towards the PD mean), their sds, and PD's milder asymmetry. Calibrated cohorts:
#: scans discordant with the clinical label — PD with near-normal uptake (as the "SWEDD" scans,
#: ≈ 10 % of clinically diagnosed early PD in trials) and controls with PD-like putamen loss;
#: uncalibrated (``hard``): the earlier overlap zone between the class means.
BORDERLINE = {"putamen": {"PD": 0.05, "control": 0.90}, "caudate": {"PD": 0.20, "control": 0.25},
              "putamen_sd": 0.08, "caudate_sd": 0.25, "asym_pd": RegionStats(mean=0.12, sd=0.09)}
BORDERLINE_UNCALIBRATED = {**BORDERLINE, "putamen": {"PD": 0.42, "control": 0.30}, "caudate": {"PD": 0.20, "control": 0.15}}
#: Largest share of a class's target variance the borderline subjects' offset may take (calibrated cohorts).
BORDERLINE_MAX_VARIANCE_SHARE = 0.7


class SynthConfig(BaseModel):
    """Every parameter of the synthetic cohort (``None`` = take the modality/difficulty preset)."""

    model_config = ConfigDict(extra="forbid")

    n_subjects: int = 200
    modality: Literal["spect", "pet"] = "spect"
    seed: int = 0
    grid: tuple[int, int, int] = (64, 64, 64)
    pd_fraction: float = 0.6
    difficulty: Literal["easy", "default", "hard"] = "default"
    #: most scans per subject (baseline + follow-ups); 1 = baseline only
    visits: int = 3
    #: fraction of subjects with follow-up scans
    followup_fraction: float = 0.4
    #: fraction of subjects (per class) whose scans lie in the overlap zone
    borderline_fraction: float | None = None
    #: expected counts per ml of tissue at reference (occipital) uptake; sets Poisson noise
    counts_per_ml: float | None = None
    #: scanner resolution range (FWHM, mm, final image); each site draws its own within it
    fwhm_mm: tuple[float, float] | None = None
    #: part of that resolution applied after the counts (reconstruction post-filter): correlated noise
    postfilter_fwhm_mm: float | None = None
    shift_mm_sd: float | None = None
    rotation_deg_sd: float | None = None
    #: log-sd of per-scan global scaling (dose, calibration); sites add their own factor
    global_scale_sd: float = 0.15
    #: mean image intensity scale (reference uptake ≈ this value)
    intensity_scale: float = 100.0
    #: relative SBR loss per year of age (both classes)
    age_slope: float = 0.006
    #: PD putamen SBR loss per year between visits (absolute); caudate loses 0.8× this
    progression_per_year: float = 0.05
    #: within-subject visit-to-visit SBR variability (relative sd)
    test_retest_sd: float = 0.03
    #: smooth non-specific heterogeneity of brain uptake (relative amplitude)
    heterogeneity: float = 0.05
    n_sites: int = 4
    #: add age, sex and site columns
    demographics: bool = True
    #: stages of the forward model (turn off for ideal volumes, e.g. in tests)
    blur: bool = True
    noise: bool = True
    misregister: bool = True
    #: region SBR distributions; default by modality
    contrast: Contrast | None = None
    #: solve each scan's uptake so the SBRs measured on its image follow ``contrast`` (preset:
    #: true except for ``hard``); false: ``contrast`` is the uptake before blur (image SBRs lower)
    calibrate: bool | None = None

    _n = field_validator("n_subjects")(at_least(2, " (one per class)"))

    @field_validator("pd_fraction")
    @classmethod
    def _pd(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"must be strictly between 0 and 1, got {v}")
        return v

    @field_validator("followup_fraction", "borderline_fraction")
    @classmethod
    def _frac(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"must be between 0 and 1, got {v}")
        return v

    @field_validator("grid", mode="before")
    @classmethod
    def _grid(cls, v: Any) -> Any:
        if isinstance(v, (int, np.integer)):
            v = (int(v),) * 3
        if len(tuple(v)) != 3 or min(int(x) for x in v) < 8:
            raise ValueError(f"must be 3 sizes of at least 8 voxels (or one size for a cube), got {v}")
        return tuple(int(x) for x in v)

    @field_validator("visits", "n_sites")
    @classmethod
    def _pos(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be at least 1, got {v}")
        if v > len(VISIT_YEARS) * 10:
            raise ValueError(f"is implausibly large ({v})")
        return v

    _post = field_validator("postfilter_fwhm_mm")(at_least(0))

    @field_validator("counts_per_ml", "intensity_scale")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError(f"must be positive, got {v}")
        return v

    @field_validator("fwhm_mm")
    @classmethod
    def _fwhm(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 < v[0] <= v[1]:
            raise ValueError(f"must be a range (low, high) with 0 < low ≤ high, got {v}")
        return v

    def resolved(self) -> "SynthConfig":
        """A copy with every preset-dependent ``None`` filled from modality and difficulty."""
        d, m = DIFFICULTY[self.difficulty], MODALITY[self.modality]
        upd: dict[str, Any] = {}
        for k in ("borderline_fraction", "shift_mm_sd", "rotation_deg_sd", "calibrate"):
            if getattr(self, k) is None:
                upd[k] = d[k]
        if self.counts_per_ml is None:
            upd["counts_per_ml"] = d["counts_per_ml"] * m["counts_factor"]
        if self.fwhm_mm is None:
            upd["fwhm_mm"] = m["fwhm_mm"]
        if self.postfilter_fwhm_mm is None:
            upd["postfilter_fwhm_mm"] = min(m["postfilter_fwhm_mm"], (self.fwhm_mm or m["fwhm_mm"])[0])
        if self.contrast is None:
            upd["contrast"] = SPECT_CONTRAST if self.modality == "spect" else PET_CONTRAST
        if self.visits > len(VISIT_YEARS):
            raise ConfigError(f"synth option 'visits': at most {len(VISIT_YEARS)} visits ({', '.join(VISIT_YEARS)}), got {self.visits}")
        return self.model_copy(update=upd)


def make_config(**options: Any) -> SynthConfig:
    """Build a :class:`SynthConfig`, turning validation failures into a clear :class:`ConfigError`."""
    try:
        return SynthConfig(**options).resolved()
    except ValidationError as e:
        raise ConfigError(f"invalid synth options: {describe_validation_error(e, SynthConfig, noun='option')}") from None


# --------------------------------------------------------------------------- subjects
def _gamma(rng: np.random.Generator, stats: RegionStats) -> float:
    """A gamma draw with the given mean and sd (non-negative asymmetry indices)."""
    return cal.gamma_draw(rng, cal.Moments(stats.mean, stats.sd))


def _border_mean(cfg: SynthConfig, region: str, pd: bool) -> float:
    """Where a borderline subject's ``region`` SBR sits: part of the way from the control mean towards the PD mean.

    Calibrated cohorts: no further from its own class mean than lets the class keep its target
    sd (the borderline subjects' share of the class variance, p/(1 − p)·Δ², at most
    :data:`BORDERLINE_MAX_VARIANCE_SHARE` of it); a narrower class or a larger fraction moves them closer.
    """
    c = cfg.contrast
    assert c is not None
    ctl, pdm = getattr(c, f"{region}_control").mean, getattr(c, f"{region}_pd").mean
    table = BORDERLINE if cfg.calibrate else BORDERLINE_UNCALIBRATED
    pos = ctl - table[region]["PD" if pd else "control"] * (ctl - pdm)
    p = float(cfg.borderline_fraction or 0.0)
    if cfg.calibrate and 0.0 < p < 1.0:
        own = getattr(c, f"{region}_{'pd' if pd else 'control'}")
        reach = own.sd * np.sqrt(BORDERLINE_MAX_VARIANCE_SHARE * (1.0 - p) / p)
        pos = float(np.clip(pos, own.mean - reach, own.mean + reach))
    return pos


def _subject_params(cfg: SynthConfig, pd: bool, borderline: bool, rng: np.random.Generator,
                    draw: Contrast | None = None) -> dict[str, Any]:
    """Baseline biology of one subject: SBRs at the reference age, asymmetry, gradient.

    Typical subjects draw from ``draw`` (default ``cfg.contrast``; the calibration passes the
    distributions that make the measured classes match ``cfg.contrast``); borderline subjects
    sit between ``cfg.contrast``'s class means.
    """
    c = cfg.contrast
    assert c is not None
    d = draw or c
    z_put, z_cau = rng.standard_normal(2)
    z_cau = 0.5 * z_put + np.sqrt(1 - 0.25) * z_cau  # caudate correlates with putamen
    if borderline:
        # calibrated: label-discordant scans (near-normal PD, PD-like controls); uncalibrated: the overlap zone
        put = _border_mean(cfg, "putamen", pd) + BORDERLINE["putamen_sd"] * z_put
        cau = _border_mean(cfg, "caudate", pd) + BORDERLINE["caudate_sd"] * z_cau
        asym = _gamma(rng, BORDERLINE["asym_pd"] if pd else d.asym_control)
        beta = rng.normal(0.9, 0.3) if pd else rng.normal(0.35, 0.2)
    elif pd:
        put = d.putamen_pd.mean + d.putamen_pd.sd * z_put
        cau = d.caudate_pd.mean + d.caudate_pd.sd * z_cau
        asym = _gamma(rng, d.asym_pd)
        beta = rng.normal(1.8, 0.4)
    else:
        put = d.putamen_control.mean + d.putamen_control.sd * z_put
        cau = d.caudate_control.mean + d.caudate_control.sd * z_cau
        asym = _gamma(rng, d.asym_control)
        beta = rng.normal(0.3, 0.15)
    put = max(put, 0.12)
    # in PD the caudate is spared relative to the putamen (uncalibrated cohorts: every subject, as before)
    cau = max(cau, put * 1.05, 0.3) if (pd or not cfg.calibrate) else max(cau, 0.3)
    cau_asym = 0.5 * asym + _gamma(rng, RegionStats(mean=0.04, sd=0.04))
    return {
        "putamen": float(put), "caudate": float(cau),
        "asym": float(min(asym, 1.5)), "caudate_asym": float(min(cau_asym, 1.5)),
        "worse_left": bool(rng.random() < 0.5), "beta": float(beta),
        "rate": float(max(rng.normal(cfg.progression_per_year, 0.3 * cfg.progression_per_year), 0.2 * cfg.progression_per_year)) if pd else 0.0,
    }


def _visit_sbr(cfg: SynthConfig, p: dict[str, Any], age: float, years: float, rng: np.random.Generator) -> dict[str, float]:
    """Region SBRs of one scan: progression, age effect, test–retest variability."""
    put = max(p["putamen"] - p["rate"] * years, 0.1 * p["putamen"])
    cau = max(p["caudate"] - 0.8 * p["rate"] * years, 0.1 * p["caudate"])
    age_f = max(1.0 - cfg.age_slope * (age - REFERENCE_AGE), 0.5)
    out = {}
    for reg, m, a in (("putamen", put, p["asym"]), ("caudate", cau, p["caudate_asym"])):
        lo, hi = m * (1 - a / 2), m * (1 + a / 2)
        left, right = (lo, hi) if p["worse_left"] else (hi, lo)
        for side, v in (("L", left), ("R", right)):
            out[f"{reg}_{side}"] = float(max(v * age_f * (1 + cfg.test_retest_sd * rng.standard_normal()), 0.02))
    return out


def _subject_ids(n: int, rng: np.random.Generator) -> list[str]:
    """PPMI-like subject numbers (3001, 3002, … 4-digit, 5-digit once past 9999)."""
    pool = np.arange(3001, 3001 + max(2000, 4 * n))
    return [str(x) for x in np.sort(rng.choice(pool, size=n, replace=False))]


def _render_params(cfg: SynthConfig, r: np.random.Generator, sbr: dict[str, float], beta: float,
                   fwhm: float, scale: float) -> dict[str, Any]:
    """One scan's rendering draws (resolution jitter, scaling, heterogeneity, misregistration, noise seed)."""
    return {
        "sbr": sbr, "beta": beta, "fwhm": float(fwhm + r.normal(0, 0.3)),
        "scale": float(scale * np.exp(r.normal(0, cfg.global_scale_sd))),
        "hetero": r.standard_normal(4).astype(np.float32),
        "shift_mm": r.normal(0, cfg.shift_mm_sd or 0.0, 3), "rot_deg": r.normal(0, cfg.rotation_deg_sd or 0.0, 3),
        "noise_seed": int(r.integers(2**63)),
    }


def scan_table(cfg: SynthConfig, draw: Contrast | None = None) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The scan table and the per-scan render parameters (no volumes yet).

    ``true_sbr_*`` and each scan's ``sbr`` are the SBRs the scan is made to have: with
    ``cfg.calibrate`` the expected measurement on its image (the uptake is solved for at
    rendering), otherwise the uptake before blur. ``draw``: see :func:`_subject_params`.
    """
    root = np.random.SeedSequence(cfg.seed)
    cohort_ss, subj_ss = root.spawn(2)
    rng = np.random.default_rng(cohort_ss)
    n = cfg.n_subjects
    n_pd = int(min(max(round(n * cfg.pd_fraction), 1), n - 1))
    is_pd = np.zeros(n, dtype=bool)
    is_pd[rng.permutation(n)[:n_pd]] = True
    border = np.zeros(n, dtype=bool)
    for cls in (True, False):
        members = np.flatnonzero(is_pd == cls)
        k = int(round(len(members) * (cfg.borderline_fraction or 0.0)))
        border[rng.permutation(members)[:k]] = True
    ids = _subject_ids(n, rng)
    lo, hi = cfg.fwhm_mm or (10.0, 10.0)
    site_fwhm = rng.uniform(lo, hi, size=cfg.n_sites)
    site_scale = np.exp(rng.normal(0.0, 0.1, size=cfg.n_sites))
    rows, render = [], []
    image_no = 100001
    for s, ss in enumerate(subj_ss.spawn(n)):
        r = np.random.default_rng(ss)
        pd_ = bool(is_pd[s])
        p = _subject_params(cfg, pd_, bool(border[s]), r, draw)
        age0 = float(np.clip(r.normal(*AGE[CLASS_NAMES[int(pd_)]]), 30, 85))
        sex = "M" if r.random() < (0.64 if pd_ else 0.62) else "F"
        site = int(r.integers(cfg.n_sites))
        n_vis = 1
        if cfg.visits > 1 and r.random() < cfg.followup_fraction:
            n_vis = int(r.integers(2, cfg.visits + 1))
        codes = ["BL"] + sorted(r.choice(list(VISIT_YEARS)[1:], size=n_vis - 1, replace=False).tolist(), key=VISIT_YEARS.get)
        for v, code in enumerate(codes):
            years = 0.0 if v == 0 else VISIT_YEARS[code] + float(r.uniform(-0.1, 0.1))
            age = age0 + years
            sbr = _visit_sbr(cfg, p, age, years, r)
            row = {
                "scan_id": f"I{image_no}", "subject_id": ids[s], "visit": v,
                "label": CLASS_NAMES[int(pd_)], "visit_code": code, "years_from_baseline": round(years, 3),
                "borderline": bool(border[s]),
            }
            if cfg.demographics:
                row.update({"age": round(age, 1), "sex": sex, "site": f"site{site + 1:02d}"})
            row.update({f"true_sbr_{k}": round(sbr[k], 4) for k in REGIONS})
            rows.append(row)
            render.append(_render_params(cfg, r, sbr, p["beta"], site_fwhm[site], site_scale[site]))
            image_no += 1
    return pd.DataFrame(rows), render


# --------------------------------------------------------------------------- rendering
def _rotation(deg: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def uptake(an: Anatomy, cfg: SynthConfig, r: dict[str, Any]) -> np.ndarray:
    """Noise-free, unblurred activity (occipital/brain reference = 1, region = 1 + SBR)."""
    c = cfg.modality
    vol = an.scalp * np.float32(MODALITY[c]["scalp_level"]) + an.brain
    if cfg.heterogeneity:
        vol += np.float32(cfg.heterogeneity) * np.tensordot(r["hetero"], an.basis, axes=1) / 2.0
    flat = vol.ravel()
    for name in REGIONS:
        val = np.full(len(an.region_idx[name]), r["sbr"][name], dtype=np.float32)
        if name.startswith("putamen"):
            val *= cal.region_profile(an, name, r["beta"])
        flat[an.region_idx[name]] += an.region_frac[name] * val
    return vol


def _gauss(vol: np.ndarray, fwhm_mm: float, voxel_mm: np.ndarray) -> np.ndarray:
    sigma = fwhm_mm / (2 * np.sqrt(2 * np.log(2))) / voxel_mm
    return ndimage.gaussian_filter(vol, sigma=sigma, truncate=3.0, mode="constant")


def render(an: Anatomy, cfg: SynthConfig, r: dict[str, Any]) -> np.ndarray:
    """One scan: uptake → blur → misregistration → Poisson counts → post-filter → global scaling.

    The resolution is split: FWHM² = intrinsic² + post-filter²; the post-filter acts on the
    noisy counts, as a reconstruction filter does, so the noise is spatially correlated.
    """
    vol = uptake(an, cfg, r)
    post = float(cfg.postfilter_fwhm_mm or 0.0) if (cfg.blur and cfg.noise) else 0.0
    post = min(post, r["fwhm"])
    if cfg.blur:
        vol = _gauss(vol, float(np.sqrt(r["fwhm"] ** 2 - post**2)), an.voxel_mm) if r["fwhm"] > post else vol
    if cfg.misregister and (np.any(r["shift_mm"]) or np.any(r["rot_deg"])):
        # output voxel → input voxel: x_in = M x_out + offset, rotation about the grid centre in mm
        s = np.diag(an.voxel_mm)
        m = np.linalg.inv(s) @ _rotation(r["rot_deg"]) @ s
        centre = (np.asarray(an.grid) - 1) / 2.0
        offset = centre - m @ centre + r["shift_mm"] / an.voxel_mm
        vol = ndimage.affine_transform(vol, m, offset=offset, order=1, mode="constant", cval=0.0)
    if cfg.noise:
        per_voxel = _counts_per_voxel(cfg, an)
        rng = np.random.default_rng(r["noise_seed"])
        flat = vol.ravel()
        lam = np.clip(flat[an.head_idx], 0, None) * per_voxel
        out = np.zeros_like(flat)
        out[an.head_idx] = rng.poisson(lam) / per_voxel
        vol = out.reshape(an.grid)
        if post > 0:
            vol = _gauss(vol, post, an.voxel_mm)
    vol = vol * np.float32(r["scale"] * cfg.intensity_scale)
    return np.ascontiguousarray(vol, dtype=np.float32)


# --------------------------------------------------------------------------- calibration
#: Scans per class (drawn, not rendered) whose predicted measurement noise defines the noise model.
NOISE_SCANS_PER_CLASS = 120
NOISE_SEED = 20240611


@functools.lru_cache(maxsize=8)
def _operator(grid: tuple[int, int, int], settings: str) -> cal.RoiOperator:
    """The expected-measurement operator of a grid and forward-model settings (JSON), cached with its kernels."""
    return cal.RoiOperator(anatomy(grid), **json.loads(settings))


def roi_operator(cfg: SynthConfig) -> cal.RoiOperator:
    """The :class:`~volkd.data.synth_calibrate.RoiOperator` of a resolved config (cached)."""
    an = anatomy(cfg.grid)
    settings = {"scalp_level": MODALITY[cfg.modality]["scalp_level"], "heterogeneity": cfg.heterogeneity, "blur": cfg.blur,
                "noise": cfg.noise, "misregister": cfg.misregister, "postfilter_fwhm_mm": float(cfg.postfilter_fwhm_mm or 0.0),
                "shift_mm_sd": float(cfg.shift_mm_sd or 0.0), "rotation_deg_sd": float(cfg.rotation_deg_sd or 0.0),
                "counts_per_voxel": _counts_per_voxel(cfg, an)}
    return _operator(tuple(cfg.grid), json.dumps(settings, sort_keys=True))


def _counts_per_voxel(cfg: SynthConfig, an: Anatomy) -> float:
    return float(cfg.counts_per_ml or 0.0) * float(np.prod(an.voxel_mm)) / 1000.0


def measurement_noise(cfg: SynthConfig) -> cal.NoiseModel:
    """How the SBRs measured on ``cfg``'s images scatter around each scan's target (variance by level).

    Predicted (:meth:`~volkd.data.synth_calibrate.RoiOperator.noise_variance`) for
    :data:`NOISE_SCANS_PER_CLASS` subjects per class drawn from ``cfg.contrast`` at three
    resolutions across ``fwhm_mm`` (fixed seed), then fitted by level.
    """
    op = roi_operator(cfg)
    rng = np.random.default_rng(NOISE_SEED)
    lo, hi = cfg.fwhm_mm or (10.0, 10.0)
    fwhms = np.linspace(lo, hi, 3)
    rows = []
    for pd_ in (False, True):
        for i in range(NOISE_SCANS_PER_CLASS):
            p = _subject_params(cfg, pd_, False, rng)
            target = _visit_sbr(cfg, p, REFERENCE_AGE, 0.0, rng)
            hetero = rng.standard_normal(4)
            f = float(fwhms[i % 3])
            v = op.noise_variance(f, p["beta"], hetero, op.solve(f, p["beta"], hetero, target))
            rows.append(((target["putamen_L"] + target["putamen_R"]) / 2, (target["caudate_L"] + target["caudate_R"]) / 2,
                         v["putamen"], v["caudate"], v["diff"]))
    a = np.array(rows)
    return cal.NoiseModel(putamen=cal.NoiseModel.fit(a[:, 0], a[:, 2]), caudate=cal.NoiseModel.fit(a[:, 1], a[:, 3]),
                          diff=cal.NoiseModel.fit(a[:, 0], a[:, 4]))


#: Config fields that do not change the class distributions to draw from (left out of the cache key).
_NOT_DRAWING = ("n_subjects", "seed", "pd_fraction", "visits", "followup_fraction", "global_scale_sd", "intensity_scale",
                "progression_per_year", "n_sites", "demographics")


def drawing_contrast(cfg: SynthConfig) -> tuple[Contrast, dict[str, Any]]:
    """Distributions to draw typical subjects from so that the *measured* classes match ``cfg.contrast``.

    Takes out of the target spread what age, visit-to-visit variability and the image's
    measurement noise add, and accounts for the borderline subjects (a mixture); returns the
    drawing :class:`Contrast` and a JSON-ready record (components, noise, reachability).
    Cached per relevant settings (it is deterministic).
    """
    draw_json, info_json = _drawing_contrast(json.dumps(cfg.model_dump(mode="json", exclude=set(_NOT_DRAWING)), sort_keys=True))
    return Contrast.model_validate_json(draw_json), json.loads(info_json)


@functools.lru_cache(maxsize=16)
def _drawing_contrast(key: str) -> tuple[str, str]:
    cfg = SynthConfig(**json.loads(key)).resolved()
    draw, info = _solve_drawing_contrast(cfg)
    return draw.model_dump_json(), json.dumps(info)


def _solve_drawing_contrast(cfg: SynthConfig) -> tuple[Contrast, dict[str, Any]]:
    c = cfg.contrast
    assert c is not None
    noise = measurement_noise(cfg)
    frac = float(cfg.borderline_fraction or 0.0)
    if frac >= 0.999:  # every subject is borderline: nothing is drawn from the typical components
        return c, {"noise": noise.to_dict(), "components": None, "reachable": None}
    upd: dict[str, Any] = {}
    reachable: dict[str, bool] = {}
    for cls, key in (("control", "control"), ("PD", "pd")):
        am, a2 = cal.age_factor_moments(*AGE[cls], cfg.age_slope, REFERENCE_AGE)
        comps = {}
        for region in ("putamen", "caudate"):
            target = getattr(c, f"{region}_{key}")
            border = cal.Moments(_border_mean(cfg, region, cls == "PD"), BORDERLINE[f"{region}_sd"])
            noise_sd = float(np.sqrt(noise.var(region, np.sqrt(target.mean**2 + target.sd**2))))
            comp, ok = cal.typical_component(cal.Moments(target.mean, target.sd), age_mean=am, age_second=a2,
                                             retest_sd=cfg.test_retest_sd, noise_sd=noise_sd, border_fraction=frac, border=border)
            comps[region] = comp
            upd[f"{region}_{key}"] = RegionStats(mean=comp.mean, sd=comp.sd)
            reachable[f"{region}_{key}"] = ok
        target = getattr(c, f"asym_{key}")
        model = cal.AsymmetryModel(
            level=comps["putamen"], border_level=cal.Moments(_border_mean(cfg, "putamen", cls == "PD"), BORDERLINE["putamen_sd"]),
            border_fraction=frac, border_asym=cal.Moments(BORDERLINE["asym_pd"].mean, BORDERLINE["asym_pd"].sd) if cls == "PD" else None,
            age=AGE[cls], age_slope=cfg.age_slope, reference_age=REFERENCE_AGE, retest_sd=cfg.test_retest_sd)
        comp, ok = cal.asymmetry_component(cal.Moments(target.mean, target.sd), model, noise)
        upd[f"asym_{key}"] = RegionStats(mean=comp.mean, sd=comp.sd)
        reachable[f"asym_{key}"] = ok
    draw = c.model_copy(update=upd)
    info = {"noise": noise.to_dict(), "components": draw.model_dump(mode="json", exclude={"source"}), "reachable": reachable}
    return draw, info


def synthesize(config: SynthConfig | None = None, **options: Any) -> Cohort:
    """Generate the synthetic cohort (``config`` or keyword options of :class:`SynthConfig`)."""
    cfg = make_config(**options) if config is None else make_config(**{**config.model_dump(), **options})
    an = anatomy(cfg.grid)
    extra: dict[str, Any] = {"synth": cfg.model_dump(mode="json"), "description": MODALITY[cfg.modality]["description"]}
    if cfg.calibrate:
        draw, extra["calibration"] = drawing_contrast(cfg)
        op = roi_operator(cfg)
        table, params = scan_table(cfg, draw)
        for r in params:
            r["sbr"] = op.solve(r["fwhm"], r["beta"], r["hetero"], r["sbr"])
    else:
        table, params = scan_table(cfg)
    vols = np.empty((len(table), *cfg.grid), dtype=np.float32)
    for i, r in enumerate(params):
        vols[i] = render(an, cfg, r)
    meta = CohortMeta(
        grid_shape=cfg.grid, voxel_size_mm=tuple(float(v) for v in an.voxel_mm), orientation="RAS",
        modality=cfg.modality, class_names=list(CLASS_NAMES), space="MNI", affine=an.affine.tolist(), extra=extra,
    )
    return Cohort(vols, table, meta)
