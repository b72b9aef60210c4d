"""The synthetic DaTscan-like cohort: determinism, metadata, biology, forward model, errors."""

from __future__ import annotations

import numpy as np
import pytest

from volkd.data import atlas
from volkd.data.synth import REGIONS, SPECT_CONTRAST, SynthConfig, make_config, synthesize
from volkd.errors import ConfigError
from volkd.evaluate.sbr import SBR_REGIONS, sbr_features

IDEAL = {"blur": False, "noise": False, "misregister": False}
assert tuple(SBR_REGIONS) == tuple(REGIONS)


def measured_sbr(volumes: np.ndarray, grid) -> np.ndarray:
    """SBRs measured as the SBR baseline does (atlas ROIs, occipital reference), columns in REGIONS order."""
    return sbr_features(np.asarray(volumes), tuple(grid))


@pytest.fixture(scope="module")
def big():
    """Many subjects, no borderline cases, table only matters (tiny grid keeps it fast).

    Uncalibrated, so the drawn SBRs follow the METHOD.md table itself (a calibrated cohort draws
    narrower ones so that the *measured* SBRs follow it: see test_synth_calibration.py).
    """
    return synthesize(n_subjects=160, grid=16, seed=11, borderline_fraction=0.0, pd_fraction=0.5, calibrate=False)


@pytest.fixture(scope="module")
def ideal24():
    """Noise-, blur- and misregistration-free volumes on a 24³ grid."""
    return synthesize(n_subjects=24, grid=24, seed=5, borderline_fraction=0.0, pd_fraction=0.5, visits=1, **IDEAL)


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = synthesize(n_subjects=6, grid=16, seed=3)
    b = synthesize(n_subjects=6, grid=16, seed=3)
    c = synthesize(n_subjects=6, grid=16, seed=4)
    assert a.volumes.tobytes() == b.volumes.tobytes()
    assert a.scans.equals(b.scans)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert not np.array_equal(a.volumes[0], c.volumes[0])


def test_metadata_mni_space_and_columns():
    c = synthesize(n_subjects=5, grid=(20, 24, 16), modality="pet", seed=1)
    aff = atlas.mni_grid_affine((20, 24, 16))
    assert c.volumes.shape[1:] == (20, 24, 16) and c.volumes.dtype == np.float32
    assert np.isfinite(c.volumes).all() and c.volumes.min() >= 0
    assert c.meta.space == "MNI" and c.meta.orientation == "RAS" and c.meta.modality == "pet"
    np.testing.assert_allclose(np.array(c.meta.affine), aff)
    np.testing.assert_allclose(c.meta.voxel_size_mm, np.abs(np.diag(aff)[:3]))
    assert c.class_names == ["control", "PD"]
    syn = c.meta.extra["synth"]
    assert syn["seed"] == 1 and syn["grid"] == [20, 24, 16] and syn["counts_per_ml"] == 2400.0  # PET: 10× SPECT counts
    assert syn["calibrate"] is True and c.meta.extra["calibration"]["components"]["putamen_pd"]["mean"] > 0
    assert syn["fwhm_mm"] == [4.5, 5.5] and syn["postfilter_fwhm_mm"] == 3.0
    for col in ("scan_id", "subject_id", "visit", "label", "age", "sex", "site", "visit_code", "borderline"):
        assert col in c.scans.columns
    assert c.scans["scan_id"].is_unique and c.scans["scan_id"].str.fullmatch(r"I\d{6}").all()
    assert c.scans["subject_id"].str.fullmatch(r"\d{4,5}").all()
    assert set(c.scans["sex"]) <= {"M", "F"}
    assert "age" not in synthesize(n_subjects=2, grid=16, demographics=False).scans.columns


def test_class_balance_option():
    c = synthesize(n_subjects=20, grid=16, pd_fraction=0.25, visits=1)
    assert (c.scans["label"] == "PD").sum() == 5 and (c.scans["label"] == "control").sum() == 15
    c = synthesize(n_subjects=2, grid=16, pd_fraction=0.99, visits=1)
    assert sorted(c.scans["label"]) == ["PD", "control"]  # both classes always present


def test_true_sbr_distributions_match_method_table(big):
    s = big.scans[big.scans["visit"] == 0]
    put = s[["true_sbr_putamen_L", "true_sbr_putamen_R"]].mean(axis=1)
    cau = s[["true_sbr_caudate_L", "true_sbr_caudate_R"]].mean(axis=1)
    ctl, pd_ = s["label"] == "control", s["label"] == "PD"
    assert 1.65 < put[ctl].mean() < 1.97 and 0.2 < put[ctl].std() < 0.42
    assert 0.52 < put[pd_].mean() < 0.82 and 0.2 < put[pd_].std() < 0.42
    assert 2.9 < cau[ctl].mean() < 3.4 and 1.8 < cau[pd_].mean() < 2.35
    asym = (s["true_sbr_putamen_L"] - s["true_sbr_putamen_R"]).abs() / put
    assert 0.04 < asym[ctl].mean() < 0.11 and 0.14 < asym[pd_].mean() < 0.27
    assert asym[pd_].mean() > asym[ctl].mean() + 0.07


def test_borderline_subjects_overlap_uncalibrated():
    c = synthesize(n_subjects=100, grid=16, seed=2, borderline_fraction=0.3, pd_fraction=0.5, visits=1, calibrate=False)
    s = c.scans
    put = s[["true_sbr_putamen_L", "true_sbr_putamen_R"]].mean(axis=1)
    assert s["borderline"].sum() == 30  # 15 per class
    bl = s["borderline"]
    pd_b, ct_b = put[bl & (s["label"] == "PD")], put[bl & (s["label"] == "control")]
    # borderline PD and controls lie between the two class means, close together
    assert 1.0 < pd_b.mean() < ct_b.mean() < 1.6 and ct_b.mean() - pd_b.mean() < 0.3


def test_borderline_subjects_calibrated_are_discordant():
    """Calibrated: PD with near-normal scans and controls with PD-like putamen loss."""
    c = synthesize(n_subjects=200, grid=16, seed=2, pd_fraction=0.5, visits=1)  # default: 5 % per class
    s = c.scans
    put = s[["true_sbr_putamen_L", "true_sbr_putamen_R"]].mean(axis=1)
    assert s["borderline"].sum() == 10
    bl, pd_ = s["borderline"], s["label"] == "PD"
    assert abs(put[bl & pd_].mean() - 1.81) < 0.2  # near the control mean
    assert abs(put[bl & ~pd_].mean() - 0.66) < 0.2  # near the PD mean
    assert put[~bl & ~pd_].mean() > put[bl & ~pd_].mean() + 0.8
    # more borderline subjects than a class's sd can hold: they move towards their class mean, and the
    # calibration still reaches every target
    c = synthesize(n_subjects=40, grid=16, seed=2, pd_fraction=0.5, visits=1, borderline_fraction=0.2)
    s = c.scans
    put = s[["true_sbr_putamen_L", "true_sbr_putamen_R"]].mean(axis=1)
    pd_b = put[s["borderline"] & (s["label"] == "PD")]
    assert 0.66 + 0.3 < pd_b.mean() < 0.66 + 0.3 * np.sqrt(0.7 * 4) + 0.2  # capped at 1.16 from the nominal 1.75
    assert all(c.meta.extra["calibration"]["reachable"].values())


def test_visits_share_subject_and_pd_declines(big):
    s = big.scans
    multi = s.groupby("subject_id").filter(lambda g: len(g) > 1)
    assert len(multi) > 0 and s["visit"].max() <= 2
    for _, g in multi.groupby("subject_id"):
        assert g["visit"].tolist() == list(range(len(g)))
        assert g["label"].nunique() == 1 and g["visit_code"].iloc[0] == "BL"
        assert g["years_from_baseline"].is_monotonic_increasing and g["age"].is_monotonic_increasing
    put = s[["true_sbr_putamen_L", "true_sbr_putamen_R"]].mean(axis=1)
    pd_multi = multi[multi["label"] == "PD"]
    drops, rates = [], []
    for sid, g in pd_multi.groupby("subject_id"):
        b, last = put[g.index[0]], put[g.index[-1]]
        drops.append(b - last)
        rates.append((b - last) / g["years_from_baseline"].iloc[-1])
    assert np.mean(drops) > 0 and np.mean(np.array(drops) > 0) > 0.8
    assert 0.03 < np.mean(rates) < 0.09  # ≈ 0.05/year plus the age effect


def test_measured_sbr_on_ideal_volumes(ideal24):
    m = measured_sbr(ideal24.volumes, ideal24.meta.grid_shape)
    s = ideal24.scans
    ctl, pd_ = (s["label"] == "control").to_numpy(), (s["label"] == "PD").to_numpy()
    put = m[:, 2:].mean(axis=1)
    assert put[ctl].mean() > put[pd_].mean() + 0.6
    true = s[[f"true_sbr_{r}" for r in REGIONS]].to_numpy()
    # calibrated: each scan's uptake is solved so the atlas-ROI measurement gives its true SBR
    np.testing.assert_allclose(m, true, atol=2e-3)


def test_pd_loses_posterior_putamen_first(ideal24):
    grid = tuple(ideal24.meta.grid_shape)
    masks = atlas.striatum_masks(grid)
    post_ant = []
    for i in range(len(ideal24)):
        v = ideal24.volumes[i]
        r = []
        for side in ("putamen_L", "putamen_R"):
            ys = np.nonzero(masks[side])[1]
            mid = np.median(ys)
            post = masks[side] & (np.arange(grid[1])[None, :, None] < mid)
            ant = masks[side] & (np.arange(grid[1])[None, :, None] > mid)
            r.append(v[post].mean() / v[ant].mean())
        post_ant.append(np.mean(r))
    post_ant = np.array(post_ant)
    pd_ = (ideal24.scans["label"] == "PD").to_numpy()
    assert post_ant[pd_].mean() < 0.85 and post_ant[pd_].mean() < post_ant[~pd_].mean() - 0.1


def _max_gradient(vol: np.ndarray) -> float:
    return float(max(np.abs(np.diff(vol, axis=a)).max() for a in range(3)) / vol.max())


def test_pet_sharper_than_spect_and_noise_preserves_mean():
    kw = dict(n_subjects=4, grid=24, seed=9, noise=False, misregister=False, visits=1, calibrate=False)  # the forward model alone
    spect = synthesize(modality="spect", **kw)
    pet = synthesize(modality="pet", contrast=SPECT_CONTRAST, **kw)  # same uptake, only resolution differs
    ratios = [_max_gradient(pet.volumes[i]) / _max_gradient(spect.volumes[i]) for i in range(4)]
    assert min(ratios) > 1.0 and np.mean(ratios) > 1.15, ratios
    # less partial-volume loss: measured striatal SBR recovers more of the true value
    rec = measured_sbr(pet.volumes, (24, 24, 24)) / measured_sbr(spect.volumes, (24, 24, 24))
    assert rec[:, :2].min() > 1.1 and rec.mean() > 1.15, rec  # caudate: the smaller structure
    noisy = synthesize(n_subjects=4, grid=24, seed=9, misregister=False, visits=1, calibrate=False)
    assert not np.array_equal(noisy.volumes, spect.volumes)
    np.testing.assert_allclose(noisy.volumes.mean(axis=(1, 2, 3)), spect.volumes.mean(axis=(1, 2, 3)), rtol=0.02)


def test_misregistration_moves_the_striatum():
    a = synthesize(n_subjects=3, grid=24, seed=4, visits=1, noise=False, misregister=False, calibrate=False)
    b = synthesize(n_subjects=3, grid=24, seed=4, visits=1, noise=False, shift_mm_sd=6.0, rotation_deg_sd=0.0, calibrate=False)
    assert not np.allclose(a.volumes, b.volumes)
    np.testing.assert_allclose(a.volumes.sum(axis=(1, 2, 3)), b.volumes.sum(axis=(1, 2, 3)), rtol=0.05)


def test_difficulty_presets():
    easy, hard = make_config(difficulty="easy"), make_config(difficulty="hard")
    assert easy.borderline_fraction < hard.borderline_fraction
    assert easy.counts_per_ml > hard.counts_per_ml and easy.shift_mm_sd < hard.shift_mm_sd
    assert make_config(difficulty="hard", counts_per_ml=123.0).counts_per_ml == 123.0  # explicit wins
    cfg = SynthConfig(n_subjects=3, grid=16, visits=1, seed=2)
    assert len(synthesize(cfg)) == 3 and synthesize(cfg, seed=3).fingerprint() != synthesize(cfg).fingerprint()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"n_subjects": 1}, r"invalid synth options: option 'n_subjects': must be ≥ 2 \(one per class\), got 1"),
        ({"modality": "mri"}, r"'modality': .*'spect' or 'pet'.*got 'mri'"),
        ({"pd_fraction": 0.0}, r"'pd_fraction': must be strictly between 0 and 1, got 0.0"),
        ({"pd_fraction": 1.5}, r"'pd_fraction': must be strictly between 0 and 1"),
        ({"difficulty": "extreme"}, r"'difficulty'"),
        ({"grid": 4}, r"'grid': must be 3 sizes of at least 8"),
        ({"visits": 9}, r"'visits': at most 6 visits"),
        ({"fwhm_mm": (12.0, 8.0)}, r"'fwhm_mm'"),
        ({"n_subject": 10}, r"'n_subject'"),
    ],
)
def test_invalid_options_raise_clear_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        synthesize(**options)


def test_noise_is_poisson_level_and_spatially_correlated():
    kw = dict(n_subjects=2, grid=32, seed=6, visits=1, misregister=False, calibrate=False)  # same uptake with and without noise
    clean = synthesize(noise=False, **kw)
    occ = atlas.occipital_mask((32, 32, 32))
    rel = {}
    for cpm in (30.0, 480.0):
        noisy = synthesize(counts_per_ml=cpm, **kw)
        res = noisy.volumes[0] - clean.volumes[0]
        rel[cpm] = res[occ].std() / clean.volumes[0][occ].mean()
        inside = res[8:24, 8:24, 8:24]
        lag1 = np.corrcoef(inside[:-1].ravel(), inside[1:].ravel())[0, 1]
        assert lag1 > 0.2, lag1  # the reconstruction post-filter correlates neighbouring voxels
    assert 2.5 < rel[30.0] / rel[480.0] < 5.5  # 16× the counts → ≈ 4× less noise (Poisson)
