"""Drift detection: calibration of the detectors on generated corpora (false alarms on windows from the training
distribution, detection on another domain), and the whole check on a real workspace: the reference read from the
config repository at the model's commit, windows of stored samples, two drifting windows before a declaration,
the hook called once, no report without traffic, a dataset whose files are gone."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from backend.gitstore import Identity
from backend.monitoring import declaration, report, samples
from backend.monitoring.checks import PreparedReference, detect
from backend.monitoring.declaration import WindowRules
from backend.store.models import AuditEvent, Config, Deployment, ModelVersion, Run, User
from backend.store.models import DriftReport as DriftReportRow
from tests.drift_corpora import arithmetic, kitchen, support

WINDOW = 50


def _declared_over(prep: PreparedReference, windows: list[list[str]]) -> tuple[list[bool], list[str]]:
    """Each window checked in turn under the declaration rule: (drifting per window, state per window)."""
    rules, previous, drifting, states = WindowRules(), [], [], []
    for i, window in enumerate(windows):
        findings = detect(prep, window, seed=i)
        state = declaration.decide(findings.drifting, declaration.Streak.of(previous, 1), rules)
        drifting.append(findings.drifting)
        states.append(state)
        previous.insert(0, _fake_report(findings.drifting, state == report.DECLARED))
    return drifting, states


def _fake_report(drifting: bool, declared: bool) -> report.DriftReport:
    now = datetime.now(UTC)
    return report.DriftReport(0, "d", 1, "m:v1", now, now, now, WINDOW, declared, {}, {}, [], [], drifting=drifting)


def test_calibration_false_alarms_on_the_training_distribution_stay_under_5_percent(record_property):
    """60 windows of 50 kitchen questions from the generator the reference came from (its richer vocabulary and
    varied lengths make this the case that can fail), and 10 of the demo's arithmetic."""
    prep = PreparedReference.of(kitchen(600, seed=0))
    drifting, states = _declared_over(prep, [kitchen(WINDOW, seed=1000 + i) for i in range(60)])
    window_rate, declared_rate = sum(drifting) / 60, states.count(report.DECLARED) / 60
    record_property("kitchen_window_false_alarm_rate", window_rate)
    record_property("kitchen_declared_false_alarm_rate", declared_rate)
    print(f"kitchen: drifting windows {sum(drifting)}/60, declared {states.count(report.DECLARED)}/60")
    assert declared_rate < 0.05 and window_rate < 0.10
    prep = PreparedReference.of(arithmetic(64, seed=0))  # the demo dataset as seeded (64 records)
    drifting, states = _declared_over(prep, [arithmetic(WINDOW, seed=2000 + i) for i in range(10)])
    print(f"arithmetic: drifting windows {sum(drifting)}/10, declared {states.count(report.DECLARED)}/10")
    assert report.DECLARED not in states


@pytest.mark.parametrize(
    "reference, other",
    [(lambda: arithmetic(64, 0), kitchen), (lambda: kitchen(600, 0), support)],
    ids=["arithmetic->kitchen", "kitchen->support"],
)
def test_calibration_another_domain_is_declared_within_two_windows(reference, other):
    prep = PreparedReference.of(reference())
    for start in range(0, 10, 2):  # five independent runs of two windows each
        drifting, states = _declared_over(prep, [other(WINDOW, seed=3000 + start), other(WINDOW, seed=3001 + start)])
        assert drifting == [True, True] and states == [report.DRIFTING, report.DECLARED]
    findings = detect(prep, other(WINDOW, seed=1))
    assert findings.top_terms and findings.sample_prompts
    assert all(findings.scores[k] > findings.thresholds[k] for k in ("oov_rate", "domain_auc"))


def test_a_drift_goes_on_without_being_declared_again_and_a_clean_window_resets_it():
    rules = WindowRules()
    states, previous = [], []
    for drifting in (True, True, True, False, True, True):
        state = declaration.decide(drifting, declaration.Streak.of(previous, 1), rules)
        states.append(state)
        previous.insert(0, _fake_report(drifting, state == report.DECLARED))
    assert states == ["drifting", "declared", "drifting", "ok", "drifting", "declared"]
    other_version = [_fake_report(True, False)]  # a drifting window of another model version does not count
    assert declaration.decide(True, declaration.Streak.of(other_version, 2), rules) == report.DRIFTING


# ---- the whole check on a workspace ------------------------------------------------------------------------------


def _deployment(ws, commit: str, config_path: str = "configs/example.yaml", name: str = "demo") -> int:
    with ws.store.session() as s:
        user = s.scalar(select(User.id).limit(1))
        config = Config(
            commit=commit, path=config_path, config_hash="h" * 64, dataset_version="dv", base_model="tiny", params={}
        )
        s.add(config)
        s.flush()
        run = Run(config_id=config.id, backend="local", status="succeeded", submitted_by_id=user)
        s.add(run)
        s.flush()
        number = (s.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == "tiny-sft")) or 0) + 1
        mv = ModelVersion(name="tiny-sft", version=number, run_id=run.id, artifact_uri="/x", manifest_sha256="m")
        s.add(mv)
        s.flush()
        s.add(Deployment(name=name, model_version_id=mv.id, target="local", status="running"))
        return mv.id


def _sample(deployment: str, prompt: str, at: datetime) -> samples.Sample:
    return samples.Sample(
        deployment, "tiny-sft:v1", at, "/v1/chat/completions", 200, "", False, 12.0, None,
        f"user: {prompt}", len(prompt), False, False, 0, 7, 3, 20, 1.0,
    )  # fmt: skip


def _add_window(ws, deployment: str, prompts: list[str], start: datetime) -> datetime:
    with ws.store.session() as s:
        samples.insert(s, [_sample(deployment, p, start + timedelta(seconds=i)) for i, p in enumerate(prompts)])
    return start + timedelta(seconds=len(prompts))


def test_checks_on_a_workspace_declare_once_call_the_hook_and_stay_quiet_without_traffic(any_db_env):
    ws = any_db_env.ws
    main = ws.repo.sync_main()
    version_id = _deployment(ws, main)
    monitoring = ws.monitoring
    declared = []
    monitoring.on_drift_declared.append(declared.append)
    monitoring.on_drift_declared.append(lambda _r: 1 / 0)  # a broken hook: logged, the others still run

    assert monitoring.check("demo") is None  # no traffic: no report, no error
    clock = datetime.now(UTC) - timedelta(hours=1)
    clock = _add_window(ws, "demo", arithmetic(10, seed=5), clock)
    assert monitoring.check("demo") is None  # under the minimum window: still nothing
    states = []
    for i in range(2):  # the demo's own distribution (its dataset at the model's commit is the reference)
        clock = _add_window(ws, "demo", arithmetic(40, seed=100 + i), clock)
        states.append(monitoring.check("demo").state)
    for i in range(4):  # then another domain: declared once, however long it goes on
        clock = _add_window(ws, "demo", kitchen(40, seed=200 + i), clock)
        states.append(monitoring.check("demo").state)
    assert states == ["ok", "ok", "drifting", "declared", "drifting", "drifting"]
    assert monitoring.check("demo") is None  # nothing new since the last window
    assert len(declared) == 1
    got = declared[0]
    assert (got.deployment, got.model_version_id, got.model_version) == ("demo", version_id, "tiny-sft:v1")
    assert got.n_prompts == 40 and got.n_reference == 64 and got.window_start < got.window_end
    assert set(got.scores) == set(got.thresholds) == {"length_psi", "oov_rate", "domain_auc"}
    assert got.top_terms and len(got.sample_prompts) == 5 and not got.sample_prompts[0].startswith("user: ")
    with ws.store.session() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "monitoring.drift_declared")))
        assert [(e.actor, e.subject, e.detail["report"]) for e in events] == [("lfops", "deployment:demo", got.id)]
        first = report.recent(s, "demo")[-1]
        assert first.n_prompts == 50  # the ten that were too few waited for the next window
    admin = any_db_env.actor("admin")
    view = monitoring.overview(admin, "demo", hours=2)
    assert view.latest.state == "drifting" and [r.state for r in view.reports][-1] == "ok"
    assert sum(p.samples for p in view.traffic) == 250 and view.traffic[0].latency_p50_ms == 12.0


def test_a_dataset_whose_files_are_gone_gives_a_clear_report_state(env):
    ws = env.ws
    main = ws.repo.sync_main()
    info = json.loads(ws.repo.read(main, "data/dataset_info.json"))
    info["demo_arith"]["file_name"] = "gone.json"
    commit = ws.repo.commit_file(main, "data/dataset_info.json", json.dumps(info), "gone", Identity("t", "t@x"))
    _deployment(ws, commit)
    _add_window(ws, "demo", arithmetic(40, seed=1), datetime.now(UTC) - timedelta(minutes=5))
    got = env.ws.monitoring.check("demo")
    assert got.state == "reference_missing" and not got.drifting and not got.declared and got.scores == {}
    assert got.reason == f"dataset 'demo_arith': data/gone.json is gone at commit {commit[:12]}"
    with ws.store.session() as s:
        assert s.scalar(select(func.count()).select_from(DriftReportRow)) == 1
