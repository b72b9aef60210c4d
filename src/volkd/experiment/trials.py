"""Trial planning: repeat × (baselines: SBR, majority class | 3D teacher | student × projection × KD)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from volkd.experiment.config import StudyConfig

TrialKind = Literal["sbr", "majority", "teacher", "student"]
#: Relative cost of each kind, used to weight the progress bar's ETA.
#: (A 3D teacher on D³ costs roughly a few times D / C more than a 2D student on C×D²; measured
#: at 32³ on CPU a light 3D CNN took ~10× the time of a light 2D student of the same budget.)
KIND_COST: dict[str, float] = {"sbr": 0.1, "majority": 0.01, "teacher": 10.0, "student": 1.0}


@dataclass(frozen=True)
class Trial:
    """One unit of work whose result is stored in its own file."""

    repeat: int
    kind: TrialKind
    projection: str | None = None
    kd: str | None = None

    @property
    def trial_id(self) -> str:
        """File-safe unique ID, e.g. ``r00-teacher``, ``r02-student-fuseme-graph``."""
        base = f"r{self.repeat:02d}-{self.kind}"
        return f"{base}-{self.projection}-{self.kd}" if self.kind == "student" else base

    @property
    def method(self) -> str:
        """The method label aggregated over repeats: ``teacher``, ``sbr`` or ``fuseme+graph``."""
        return f"{self.projection}+{self.kd}" if self.kind == "student" else self.kind

    @property
    def cost(self) -> float:
        return KIND_COST[self.kind]


def teacher_of(t: Trial) -> Trial:
    """The teacher trial a student of the same split distils from."""
    return Trial(t.repeat, "teacher")


def prerequisites(t: Trial, cfg: StudyConfig) -> list[Trial]:
    """The trials that must have finished before ``t`` can start: a KD student needs its split's
    teacher; every other trial (baselines, teachers, no-KD students) needs nothing. Every
    executor schedules by this one rule."""
    if t.kind == "student" and cfg.kd_config(str(t.kd)).name != "none":
        return [teacher_of(t)]
    return []


def plan_trials(cfg: StudyConfig, n_repeats: int | None = None) -> list[Trial]:
    """All trials of a study in execution order (per repeat: SBR, teacher, then its students).

    ``n_repeats`` defaults to ``cfg.split.repeats`` (the number of splits actually made
    may differ for the ``official`` protocol, which has one).
    """
    n = cfg.split.repeats if n_repeats is None else n_repeats
    out: list[Trial] = []
    for r in range(n):
        out += [Trial(r, b) for b in cfg.baselines]  # type: ignore[arg-type]
        out.append(Trial(r, "teacher"))
        for p in cfg.projections:
            for k in cfg.kd_names:
                out.append(Trial(r, "student", p, k))
    return out


def method_order(cfg: StudyConfig) -> list[str]:
    """Method labels in report order: teacher, the baselines (SBR, majority class), then each projection × KD."""
    return ["teacher", *cfg.baselines] + [f"{p}+{k}" for p in cfg.projections for k in cfg.kd_names]
