"""A realistic DaTscan-like synthetic cohort (PD vs control) in MNI space.

Anatomy comes from the AAL3 atlas (:mod:`volkd.data.atlas`); each scan is rendered as
non-specific brain uptake (occipital reference = 1) plus caudate and putamen uptake drawn
from the PPMI / clinical FP-CIT striatal binding ratio (SBR) distributions of METHOD.md §2,
then blurred (scanner resolution), misregistered (imperfect spatial normalisation),
Poisson-count noised and globally scaled. Every parameter lives in :class:`SynthConfig`;
``docs/synthetic.md`` documents the model. Same seed → byte-identical cohort.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from scipy import ndimage

from volkd.data import atlas
from volkd.data.cohort import Cohort, CohortMeta
from volkd.errors import ConfigError, at_least, describe_validation_error

CLASS_NAMES = ["control", "PD"]
REGIONS = ("caudate_L", "caudate_R", "putamen_L", "putamen_R")
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
    """Region SBR distributions (baseline, at the reference age) for both classes."""

    model_config = ConfigDict(extra="forbid")
    putamen_control: RegionStats
    putamen_pd: RegionStats
    caudate_control: RegionStats
    caudate_pd: RegionStats
    #: putamen L/R asymmetry index |L−R|/mean(L,R): mean ± sd (gamma distributed)
    asym_control: RegionStats = RegionStats(mean=0.07, sd=0.08)
    asym_pd: RegionStats = RegionStats(mean=0.20, sd=0.16)


#: FP-CIT SPECT (DaTscan): METHOD.md §2 (PPMI putamen, clinical caudate, asymmetry).
SPECT_CONTRAST = Contrast(
    putamen_control=RegionStats(mean=1.81, sd=0.30), putamen_pd=RegionStats(mean=0.66, sd=0.30),
    caudate_control=RegionStats(mean=3.15, sd=0.54), caudate_pd=RegionStats(mean=2.03, sd=0.71),
)
#: 18F-AV133 (VMAT2) PET-like: caudate ≈ putamen in controls, putamen loss ≈ 55 % in PD.
PET_CONTRAST = Contrast(
    putamen_control=RegionStats(mean=2.00, sd=0.30), putamen_pd=RegionStats(mean=0.85, sd=0.30),
    caudate_control=RegionStats(mean=2.20, sd=0.35), caudate_pd=RegionStats(mean=1.55, sd=0.40),
)

#: Difficulty presets: fraction of borderline subjects, counts per ml at reference uptake
#: (multiplied by 10 for PET), misregistration sd (mm, degrees).
DIFFICULTY = {
    "easy": {"borderline_fraction": 0.05, "counts_per_ml": 600.0, "shift_mm_sd": 1.0, "rotation_deg_sd": 1.0},
    "default": {"borderline_fraction": 0.20, "counts_per_ml": 60.0, "shift_mm_sd": 3.0, "rotation_deg_sd": 3.0},
    "hard": {"borderline_fraction": 0.35, "counts_per_ml": 25.0, "shift_mm_sd": 4.0, "rotation_deg_sd": 5.0},
}
MODALITY = {
    "spect": {"fwhm_mm": (8.0, 12.0), "postfilter_fwhm_mm": 7.0, "counts_factor": 1.0, "scalp_level": 0.25, "description": "Reconstructed DaTSCAN"},
    "pet": {"fwhm_mm": (4.5, 5.5), "postfilter_fwhm_mm": 3.0, "counts_factor": 10.0, "scalp_level": 0.35, "description": "AV133 SUVR"},
}


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
        for k in ("borderline_fraction", "shift_mm_sd", "rotation_deg_sd"):
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


# --------------------------------------------------------------------------- anatomy
@dataclass(frozen=True)
class Anatomy:
    """Precomputed atlas maps of one grid (cached per grid)."""

    grid: tuple[int, int, int]
    affine: np.ndarray
    voxel_mm: np.ndarray
    brain: np.ndarray  # fraction of brain per voxel
    scalp: np.ndarray  # extracerebral soft tissue (0–1)
    basis: np.ndarray  # (K, *grid) smooth zero-mean fields inside the brain
    region_idx: dict[str, np.ndarray]  # flat indices of voxels touched by each region
    region_frac: dict[str, np.ndarray]  # partial-volume fraction at those voxels
    putamen_t: dict[str, np.ndarray]  # 0 = posterior end … 1 = anterior end of each putamen
    head_idx: np.ndarray  # flat indices where counts can be non-zero


@functools.lru_cache(maxsize=4)
def anatomy(grid: tuple[int, int, int]) -> Anatomy:
    """Atlas-derived maps for ``grid`` over the MNI field of view."""
    grid = tuple(int(g) for g in grid)  # type: ignore[assignment]
    aff = atlas.mni_grid_affine(grid)
    vox = np.linalg.norm(aff[:3, :3], axis=0)
    brain = atlas.brain_fraction(grid, aff).astype(np.float32)
    soft = ndimage.gaussian_filter(brain, sigma=6.0 / vox, mode="constant")
    scalp = (np.clip(soft / 0.12, 0, 1) * (1 - brain)).astype(np.float32)
    # smooth heterogeneity fields: fixed (seed-independent) random fields of ~25 mm scale
    rng = np.random.default_rng(12345)
    basis = []
    for _ in range(4):
        f = ndimage.gaussian_filter(rng.standard_normal(grid).astype(np.float32), sigma=12.0 / vox, mode="wrap")
        f *= brain
        f /= np.abs(f).max() + 1e-12
        basis.append(f)
    idx, frac, tpos = {}, {}, {}
    for name, lab in atlas.STRIATUM_LABELS.items():
        fr = atlas.region_fraction((lab,), grid, aff)
        flat = np.flatnonzero(fr.ravel() > 0.02)
        idx[name], frac[name] = flat, fr.ravel()[flat].astype(np.float32)
        if name.startswith("putamen"):
            y = np.unravel_index(flat, grid)[1].astype(np.float64)
            w = frac[name]
            lo, hi = np.min(y[w > 0.3]) if (w > 0.3).any() else y.min(), np.max(y[w > 0.3]) if (w > 0.3).any() else y.max()
            tpos[name] = np.clip((y - lo) / max(hi - lo, 1.0), 0, 1).astype(np.float32)
    head = np.flatnonzero((brain + scalp).ravel() > 1e-4)
    return Anatomy(grid, aff, vox, brain, scalp, np.stack(basis), idx, frac, tpos, head)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- subjects
def _gamma(rng: np.random.Generator, stats: RegionStats) -> float:
    """A gamma draw with the given mean and sd (non-negative asymmetry indices)."""
    k = (stats.mean / stats.sd) ** 2
    return float(rng.gamma(k, stats.sd**2 / stats.mean))


def _subject_params(cfg: SynthConfig, pd: bool, borderline: bool, rng: np.random.Generator) -> dict[str, Any]:
    """Baseline biology of one subject: SBRs at the reference age, asymmetry, gradient."""
    c = cfg.contrast
    assert c is not None
    z_put, z_cau = rng.standard_normal(2)
    z_cau = 0.5 * z_put + np.sqrt(1 - 0.25) * z_cau  # caudate correlates with putamen
    if borderline:
        # overlap zone: early PD with mild loss / controls with low-normal uptake
        put = c.putamen_control.mean - (0.42 if pd else 0.30) * (c.putamen_control.mean - c.putamen_pd.mean) + 0.08 * z_put
        cau = c.caudate_control.mean - (0.2 if pd else 0.15) * (c.caudate_control.mean - c.caudate_pd.mean) + 0.25 * z_cau
        asym = _gamma(rng, RegionStats(mean=0.12, sd=0.09) if pd else c.asym_control)
        beta = rng.normal(0.9, 0.3) if pd else rng.normal(0.35, 0.2)
    elif pd:
        put = c.putamen_pd.mean + c.putamen_pd.sd * z_put
        cau = c.caudate_pd.mean + c.caudate_pd.sd * z_cau
        asym = _gamma(rng, c.asym_pd)
        beta = rng.normal(1.8, 0.4)
    else:
        put = c.putamen_control.mean + c.putamen_control.sd * z_put
        cau = c.caudate_control.mean + c.caudate_control.sd * z_cau
        asym = _gamma(rng, c.asym_control)
        beta = rng.normal(0.3, 0.15)
    put = max(put, 0.12)
    cau = max(cau, put * 1.05, 0.3)  # the caudate is spared relative to the putamen
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


def scan_table(cfg: SynthConfig) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The scan table and the per-scan render parameters (no volumes yet)."""
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
        p = _subject_params(cfg, pd_, bool(border[s]), r)
        age0 = float(np.clip(r.normal(61.5, 9.7) if pd_ else r.normal(60.8, 11.0), 30, 85))
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
            render.append({
                "sbr": sbr, "beta": p["beta"], "fwhm": float(site_fwhm[site] + r.normal(0, 0.3)),
                "scale": float(site_scale[site] * np.exp(r.normal(0, cfg.global_scale_sd))),
                "hetero": r.standard_normal(4).astype(np.float32),
                "shift_mm": r.normal(0, cfg.shift_mm_sd or 0.0, 3), "rot_deg": r.normal(0, cfg.rotation_deg_sd or 0.0, 3),
                "noise_seed": int(r.integers(2**63)),
            })
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
            prof = np.exp(np.float32(r["beta"]) * (an.putamen_t[name] - 0.5))
            prof /= np.sum(prof * an.region_frac[name]) / np.sum(an.region_frac[name])
            val *= prof
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
        per_voxel = cfg.counts_per_ml * float(np.prod(an.voxel_mm)) / 1000.0  # type: ignore[operator]
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


def synthesize(config: SynthConfig | None = None, **options: Any) -> Cohort:
    """Generate the synthetic cohort (``config`` or keyword options of :class:`SynthConfig`)."""
    cfg = make_config(**options) if config is None else make_config(**{**config.model_dump(), **options})
    an = anatomy(cfg.grid)
    table, params = scan_table(cfg)
    vols = np.empty((len(table), *cfg.grid), dtype=np.float32)
    for i, r in enumerate(params):
        vols[i] = render(an, cfg, r)
    meta = CohortMeta(
        grid_shape=cfg.grid, voxel_size_mm=tuple(float(v) for v in an.voxel_mm), orientation="RAS",
        modality=cfg.modality, class_names=list(CLASS_NAMES), space="MNI", affine=an.affine.tolist(),
        extra={"synth": cfg.model_dump(mode="json"), "description": MODALITY[cfg.modality]["description"]},
    )
    return Cohort(vols, table, meta)


def measured_sbr(volumes: np.ndarray, grid: tuple[int, int, int]) -> pd.DataFrame:
    """Region mean / occipital mean − 1 for each scan (atlas masks on the MNI grid)."""
    aff = atlas.mni_grid_affine(tuple(grid))
    masks = atlas.striatum_masks(tuple(grid), aff)
    occ = atlas.occipital_mask(tuple(grid), aff)
    flat = np.asarray(volumes, dtype=np.float32).reshape(len(volumes), -1)
    ref = flat[:, occ.ravel()].mean(axis=1)
    return pd.DataFrame({k: flat[:, masks[k].ravel()].mean(axis=1) / ref - 1.0 for k in REGIONS})
