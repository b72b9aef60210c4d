"""Trial planning: counts, IDs, order."""

from __future__ import annotations

from volkd.experiment.config import load_profile, validate_config
from volkd.experiment.trials import Trial, method_order, plan_trials, prerequisites, teacher_of


def test_plan_counts_and_order() -> None:
    cfg = validate_config({"projections": ["slices", "mip", "fuseme"], "kd": [{"name": "none"}, {"name": "graph"}, {"name": "hinton"}],
                           "split": {"repeats": 4}})
    trials = plan_trials(cfg)
    assert len(trials) == 4 * (3 + 3 * 3)  # SBR, majority, teacher, 3 projections × 3 KD
    assert len({t.trial_id for t in trials}) == len(trials)
    per_repeat = [t for t in trials if t.repeat == 1]
    assert [t.kind for t in per_repeat[:3]] == ["sbr", "majority", "teacher"]
    assert per_repeat[3].trial_id == "r01-student-slices-none"
    assert per_repeat[-1].method == "fuseme+hinton"
    assert [t.repeat for t in trials] == sorted(t.repeat for t in trials)


def test_plan_with_fewer_splits_than_repeats() -> None:
    cfg = load_profile("quick")
    assert len(plan_trials(cfg)) == cfg.split.repeats * (3 + len(cfg.projections) * len(cfg.kd_names))
    assert len(plan_trials(cfg, n_repeats=1)) == 3 + len(cfg.projections) * 2


def test_trial_ids_and_methods() -> None:
    assert Trial(3, "teacher").trial_id == "r03-teacher"
    assert Trial(0, "sbr").method == "sbr"
    s = Trial(12, "student", "fuseme", "graph")
    assert (s.trial_id, s.method) == ("r12-student-fuseme-graph", "fuseme+graph")
    assert s.cost < Trial(0, "teacher").cost


def test_method_order() -> None:
    cfg = validate_config({"projections": ["mip", "early"], "kd": [{"name": "none"}, {"name": "graph"}]})
    assert method_order(cfg) == ["teacher", "sbr", "majority", "mip+none", "mip+graph", "early+none", "early+graph"]


def test_baselines_switch_trials_and_order() -> None:
    cfg = validate_config({"projections": ["mip"], "kd": [{"name": "none"}], "baselines": ["majority"], "split": {"repeats": 2}})
    kinds = [t.kind for t in plan_trials(cfg)]
    assert kinds.count("majority") == 2 and "sbr" not in kinds
    assert method_order(cfg) == ["teacher", "majority", "mip+none"]
    none = validate_config({"projections": ["mip"], "kd": [{"name": "none"}], "baselines": [], "split": {"repeats": 1}})
    assert [t.kind for t in plan_trials(none)] == ["teacher", "student"]
    assert Trial(0, "majority").trial_id == "r00-majority"


def test_prerequisites_kd_students_wait_for_their_splits_teacher() -> None:
    cfg = validate_config({"projections": ["mip"], "kd": [{"name": "none"}, {"name": "graph"}], "split": {"repeats": 2}})
    deps = {t.trial_id: [p.trial_id for p in prerequisites(t, cfg)] for t in plan_trials(cfg)}
    assert deps["r01-student-mip-graph"] == ["r01-teacher"]
    assert deps["r01-student-mip-none"] == [] and deps["r00-teacher"] == [] and deps["r00-sbr"] == [] and deps["r00-majority"] == []
    assert teacher_of(Trial(1, "student", "mip", "graph")) == Trial(1, "teacher")
    # every prerequisite is itself planned, and comes earlier in the plan
    order = [t.trial_id for t in plan_trials(cfg)]
    assert all(order.index(p) < order.index(t) for t, ps in deps.items() for p in ps)
