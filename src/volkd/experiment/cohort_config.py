"""A study config fitted to a cohort (``volkd init-config --cohort DIR``): every choice with its reason.

The cohort is inspected (space, grid, class balance, a ``split`` column, the atlas regions on its
grid) and the quick profile's budget is kept, while everything that depends on the data is chosen
for it: normaliser, baselines, split protocol, headline metric, network strides, external cohorts.
The written YAML says, under each such key, why it was chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from volkd.atomic import check_can_write, write_text
from volkd.data.atlas import mni_grid_affine, occipital_mask, striatum_mask
from volkd.data.cohort import Cohort
from volkd.data.splits import official_split
from volkd.errors import VolkdError
from volkd.experiment.config import StudyConfig, annotated_yaml, load_profile, validate_config

#: A cohort whose smallest class holds less than this fraction of the scans is imbalanced: accuracy
#: and weighted F1 then reward predicting the majority class, so the headline becomes balanced accuracy.
IMBALANCED_BELOW = 0.35
#: The light CNN halves the grid in each of its four stages (the first by the stem stride); the stem
#: keeps full resolution (stride 1) unless the last stage would still be at least this many voxels
#: wide along the shortest axis with stride 2 (Grad-CAM and spatial context need more than 1–2 voxels).
MIN_LAST_STAGE = 3
#: The headline metric of imbalanced cohorts, and of balanced ones (the study's).
IMBALANCED_METRIC, BALANCED_METRIC = "balanced_accuracy", "f1_weighted"


def last_stage_size(grid: int, stem_stride: int) -> int:
    """Voxels along an axis of ``grid`` after the light CNN's stem (``stem_stride``) and three stride-2 stages."""
    n = -(-grid // stem_stride)
    for _ in range(3):
        n = -(-n // 2)
    return n


@dataclass
class FittedConfig:
    """A config fitted to a cohort, the reasons for its choices (dotted key → lines) and the facts found."""

    config: StudyConfig
    reasons: dict[str, list[str]]
    facts: dict[str, Any] = field(default_factory=dict)

    def yaml(self, header: str | None = None) -> str:
        """The annotated YAML: every key's description, and under the chosen ones why."""
        return annotated_yaml(self.config, header, {k: [f"► {line}" for line in v] for k, v in self.reasons.items()})


def cohort_facts(cohort: Cohort) -> dict[str, Any]:
    """What the config depends on: space, grid, class counts and balance, the split column, the atlas regions."""
    meta = cohort.meta
    s = cohort.scans
    scans = {c: int((s["label"] == c).sum()) for c in meta.class_names}
    subjects = {c: int(s.loc[s["label"] == c, "subject_id"].nunique()) for c in meta.class_names}
    facts: dict[str, Any] = {"space": meta.space, "grid": list(meta.grid_shape), "modality": meta.modality,
                             "n_scans": len(cohort), "n_subjects": int(s["subject_id"].nunique()),
                             "scans_per_class": scans, "subjects_per_class": subjects,
                             "minority_fraction": min(scans.values()) / max(1, len(cohort)),
                             "minority_class": min(scans, key=lambda c: scans[c])}
    facts["occipital_voxels"] = facts["striatum_voxels"] = 0
    if meta.space == "MNI":
        affine = np.asarray(meta.affine) if meta.affine is not None else mni_grid_affine(tuple(meta.grid_shape))
        facts["occipital_voxels"] = int(np.asarray(occipital_mask(tuple(meta.grid_shape), affine)).sum())
        facts["striatum_voxels"] = int(np.asarray(striatum_mask(tuple(meta.grid_shape), affine)).sum())
    facts["split_column"] = "split" in s.columns
    facts["official_split"] = None
    if facts["split_column"]:
        try:
            sp = official_split(cohort)
            facts["official_split"] = {"train": len(sp.train), "val": len(sp.val), "test": len(sp.test)}
        except VolkdError as e:
            facts["split_problem"] = str(e)
    return facts


def fit_config(cohort_dir: str | Path, profile: str = "quick", name: str | None = None) -> FittedConfig:
    """A study config for the cohort at ``cohort_dir``: the ``profile``'s budget, the data-dependent keys fitted."""
    cohort_dir = Path(cohort_dir)
    cohort = Cohort.load(cohort_dir)
    f = cohort_facts(cohort)
    base = load_profile(profile).model_dump(mode="json")
    why: dict[str, list[str]] = {}
    d = dict(base)
    d["name"] = name or cohort_dir.name
    d["dataset"] = {"kind": "cohort", "path": str(cohort_dir)}
    why["dataset"] = [f"the cohort {cohort_dir}: {f['n_scans']} scans of {f['n_subjects']} subjects, grid "
                      f"{'×'.join(map(str, f['grid']))}, space {f['space']}, modality {f['modality']} "
                      "(a relative path is read from the folder `volkd run` is started in)"]
    mni = f["space"] == "MNI"

    # normaliser
    extra = dict(base["training"].get("extra") or {})
    if mni and f["occipital_voxels"] > 0:
        extra["normalizer"] = "reference"
        why["training.extra"] = [f"normalizer reference: the cohort is in MNI space and the atlas occipital region covers "
                                 f"{f['occipital_voxels']} voxels of its grid (the SBR convention)"]
    else:
        extra["normalizer"] = "zscore"
        reason = (f"the cohort is in space {f['space']!r}, not MNI, so the atlas occipital region does not apply" if not mni
                  else "the atlas occipital region has no voxel on this grid")
        why["training.extra"] = [f"normalizer zscore (voxel-wise, fitted on each training partition): {reason}"]
    d["training"] = {**base["training"], "extra": extra}

    # baselines
    if mni and f["striatum_voxels"] > 0 and f["occipital_voxels"] > 0:
        d["baselines"] = ["sbr", "majority"]
        why["baselines"] = ["sbr: MNI space, so the atlas striatum and occipital regions give the binding ratios; "
                            "majority: the floor any model must beat"]
    else:
        d["baselines"] = ["majority"]
        why["baselines"] = [f"no sbr: it needs the MNI atlas striatum and occipital regions (the cohort is in space "
                            f"{f['space']!r}); majority: the floor any model must beat"]

    # split protocol
    split = dict(base["split"])
    if f["official_split"]:
        split.update(protocol="official", repeats=1)
        n = f["official_split"]
        why["split"] = [f"official: the cohort's split column holds train {n['train']} / val {n['val']} / test {n['test']} "
                        "scans (e.g. a MedMNIST release): results stay comparable with published ones",
                        "TODO(split.seeds): one official split has a single repeat, so no paired test is possible; "
                        "when volkd supports `split.seeds: N` (training seeds per split), set seeds: 5 here"]
    else:
        reason = (f"the cohort's split column cannot be used ({f['split_problem']})" if f.get("split_problem")
                  else "the cohort has no split column")
        why["split"] = [f"holdout, {split['repeats']} subject-level stratified repeats: {reason}"]
    d["split"] = split

    # headline metric and threshold
    report = dict(base["report"])
    frac, minority = f["minority_fraction"], f["minority_class"]
    if frac < IMBALANCED_BELOW:
        report["headline_metric"] = IMBALANCED_METRIC
        why["report"] = [f"headline {IMBALANCED_METRIC}: the smallest class ({minority}) is {frac:.0%} of the scans "
                         f"(< {IMBALANCED_BELOW:.0%}); accuracy and weighted F1 would reward always predicting the majority "
                         "(roc_auc is the threshold-free alternative); training weights classes by inverse frequency",
                         "TODO(report.threshold): when volkd supports `report.threshold`, choose the decision threshold "
                         "on the validation partition (e.g. the one maximising balanced accuracy) instead of argmax"]
    else:
        report["headline_metric"] = BALANCED_METRIC
        why["report"] = [f"headline {BALANCED_METRIC} (the study's): the classes are balanced enough (smallest: {minority}, "
                         f"{frac:.0%} of the scans)"]
    d["report"] = report

    # networks fitted to the grid
    g = min(f["grid"])
    last = {stride: last_stage_size(g, stride) for stride in (1, 2)}
    stride = 2 if last[2] >= MIN_LAST_STAGE else 1
    for role in ("teacher", "student"):
        d[role] = {**base[role], "stem_stride": stride}
        why[f"{role}.stem_stride"] = [
            f"{stride}: on the {'×'.join(map(str, f['grid']))} grid the last of the four stages is {last[stride]} voxels wide "
            + (f"(with stride 1: {last[1]}, 8× the cost of the first stage)" if stride == 2
               else f"(with stride 2 only {last[2]}; stride 1 costs about 8× more in the first stage of the 3D teacher)")]

    # external cohorts
    d["external"] = []
    if base.get("external"):
        why["external"] = [f"none: the {profile} profile's synthetic external cohorts have another grid and space than "
                           "this cohort; add cohorts imported like it (same grid, space and modality)"]
    cfg = validate_config(d, where=f"config fitted to {cohort_dir}")
    return FittedConfig(cfg, why, f)


def write_cohort_config(cohort_dir: str | Path, out: str | Path, profile: str = "quick", force: bool = False) -> FittedConfig:
    """Write :func:`fit_config`'s annotated YAML to ``out`` (refuses to overwrite unless ``force``)."""
    out = Path(out)
    check_can_write(out, force)
    fitted = fit_config(cohort_dir, profile, name=out.stem or None)
    header = (f"volkd study config fitted to the cohort {cohort_dir} (budget from the built-in '{profile}' profile).\n"
              "Lines marked ► say why a value was chosen for this cohort. Edit, then run: volkd run " + str(out))
    write_text(out, fitted.yaml(header))
    return fitted
