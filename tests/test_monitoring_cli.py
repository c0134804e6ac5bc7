"""`lfops monitor` as a user runs it (its own process) on a real workspace: checks (no user needed, as a CronJob runs
them), the view, sampling changes (reviewers and admins, audited; bad values refused with nothing changed), the
scheduler's pass, and the Monitoring tab's handlers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from backend.monitoring import samples
from backend.monitoring.scheduler import PeriodicMonitor
from backend.store.models import AuditEvent, DriftReport
from tests.drift_corpora import arithmetic, kitchen
from tests.helpers import run_lfops
from tests.test_monitoring_drift import _add_window, _deployment


def _lfops(env, *args, user=None):
    password = env.passwords[user] if user else None
    return run_lfops(*args, workspace=env.ws.settings.workspace, user=user, password=password)


def test_monitor_check_show_and_sampling_from_the_command_line(env):
    ws = env.ws
    _deployment(ws, ws.repo.sync_main())
    quiet = _lfops(env, "monitor", "check")
    assert quiet.returncode == 0 and "no new window to check" in quiet.stdout, quiet.stderr
    clock = datetime.now(UTC) - timedelta(hours=1)
    codes = []
    for prompts in (arithmetic(40, 1), kitchen(40, 2), kitchen(40, 3)):
        clock = _add_window(ws, "demo", prompts, clock)
        done = _lfops(env, "monitor", "check")
        codes.append((done.returncode, done.stdout.split(":")[1].split()[0]))
    assert codes == [(0, "ok"), (0, "drifting"), (1, "declared")]

    shown = _lfops(env, "monitor", "demo", "--hours", "2", "--bucket", "60", user="alice")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "demo [running] tiny-sft:v1" in out and "sampling: on, 10% of requests" in out
    assert "req/min" in out and "drift report #3" in out and "declared" in out
    assert "top terms:" in out and "sample prompts:" in out and "domain_auc" in out

    refused = _lfops(env, "monitor", "sampling", "demo", "--off", user="alice")
    assert refused.returncode == 2 and "deploy" in refused.stderr
    bad = _lfops(env, "monitor", "sampling", "demo", "--rate", "2", user="rita")
    assert bad.returncode == 2 and bad.stderr.strip().endswith("rate: must be from 0 to 1, got 2")
    with ws.store.session() as s:
        assert samples.policy(s, "demo") == samples.DEFAULT_POLICY  # nothing changed
    done = _lfops(env, "monitor", "sampling", "demo", "--off", "--retention-days", "7", user="rita")
    assert done.returncode == 0 and "demo: sampling: off" in done.stdout
    with ws.store.session() as s:
        assert samples.policy(s, "demo") == samples.Policy(enabled=False, retention_days=7)
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "monitoring.sampling"))
        assert (event.actor, event.subject, event.detail["enabled"]) == ("rita", "deployment:demo", False)

    missing = _lfops(env, "monitor", "nosuch", user="alice")
    assert missing.returncode == 2 and "deployment 'nosuch' does not exist" in missing.stderr
    cron = _lfops(env, "monitor", "cronjob", "--namespace", "ns", "--schedule", "every minute")
    assert cron.returncode == 2 and "schedule: 'every minute' must be five cron fields" in cron.stderr


def test_the_scheduler_pass_checks_every_deployment_and_is_quiet_without_traffic(env):
    ws = env.ws
    _deployment(ws, ws.repo.sync_main(), name="busy")
    with ws.store.session() as s:  # a second deployment of the same version, without traffic
        from backend.store.models import Deployment

        busy = s.scalar(select(Deployment).where(Deployment.name == "busy"))
        s.add(Deployment(name="idle", model_version_id=busy.model_version_id, target="local", status="running"))
    _add_window(ws, "busy", arithmetic(35, 9), datetime.now(UTC) - timedelta(minutes=10))
    monitor = PeriodicMonitor(ws.monitoring, interval=3600)
    made = monitor.run_once()
    assert [(r.deployment, r.state) for r in made] == [("busy", "ok")]
    assert monitor.run_once() == []  # nothing new: no report, no error
    with ws.store.session() as s:
        assert [r.deployment for r in s.scalars(select(DriftReport))] == ["busy"]


def test_the_monitoring_tab_shows_plots_and_the_report_and_refuses_analysts_sampling(env):
    from webui.monitoring_tab import MonitoringTab

    ws = env.ws
    _deployment(ws, ws.repo.sync_main())
    _add_window(ws, "demo", arithmetic(40, 1), datetime.now(UTC) - timedelta(hours=1))
    ws.monitoring.check("demo")

    class Ctx:  # the tab's handlers need only the workspace and who is signed in
        def __init__(self, who):
            self.ws = ws
            self.auth = type("A", (), {"actor": staticmethod(lambda _request: env.actor(who))})()

    tab = MonitoringTab(Ctx("alice"))
    info, rate, errors, latency, tokens, drift = tab.on_show("demo", 2, None)
    assert "Drift report #1" in info and "**ok**" in info and "| domain_auc |" in info
    assert list(rate["series"].unique()) == ["requests/min"] and len(rate) >= 1
    assert set(latency["series"]) == {"p50 ms", "p95 ms"} and set(tokens["series"]) == {
        "prompt tokens",
        "completion tokens",
    }
    assert set(drift["series"]) == {"length_psi", "oov_rate", "domain_auc"}
    assert "choose a deployment" in tab.on_show("", 2, None)[0]
    refused = tab.on_sampling("demo", False, 0.2, None)
    assert "Sampling not changed" in refused
    assert "Sampling of demo is now off." == MonitoringTab(Ctx("rita")).on_sampling("demo", False, 0.2, None)
