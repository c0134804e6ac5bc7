"""/monitoring and /retrain through FastAPI's TestClient against the app `lfops webui` serves, with real tokens:
the same verbs as `lfops monitor` and `lfops retrain` (backend.monitoring.service, backend.retrain.service) on a real
workspace. The deployment is the rows a deployed version leaves, its traffic sampled requests in the store (serving
itself is tested for real in tests/test_api_serving.py): what matters here is that the API is the backend's policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from backend.monitoring import samples
from backend.store.models import ApiToken, AuditEvent, utcnow
from tests.drift_corpora import arithmetic
from tests.snapshots import snapshot
from tests.test_api import Api, serve_api
from tests.test_monitoring_drift import _add_window, _deployment
from tests.test_retrain import bot_requests, deployed, push_data


@pytest.fixture
def api(env) -> Iterator[Api]:
    yield from serve_api(env)


def warm(api: Api) -> None:
    """Every token marked used just now: `last_used_at` is written at most once a minute, so for the next minute no
    call of the test writes it, and a snapshot taken now is what a refused call must leave."""
    with api.env.ws.store.session() as s:
        s.execute(update(ApiToken).values(last_used_at=utcnow()))


def only_audited_refusal(env, before: tuple, action: str = "api.refused") -> None:
    """Nothing changed but one audit event of the refusal (a read token refused a write is audited)."""
    after = snapshot(env)
    assert after[0] == before[0]
    changed = {name for name in after[1] if after[1][name] != before[1][name]}
    assert changed == {"audit_events"}
    with env.ws.store.session() as s:
        newest = s.scalar(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1))
    assert newest.action == action and len(after[1]["audit_events"]) == len(before[1]["audit_events"]) + 1


# ---- /monitoring -------------------------------------------------------------------------------------------------


def test_monitoring_overview_reports_and_a_check_as_the_cli_sees_them(api):
    env = api.env
    ws = env.ws
    _deployment(ws, ws.repo.sync_main())
    nothing = api.ok(api.post("/monitoring/demo/check", ("rita", "write")))
    assert nothing == {"report": None}  # no traffic yet: nothing written but the audit of who asked
    _add_window(ws, "demo", arithmetic(40, 1), datetime.now(UTC) - timedelta(hours=1))

    warm(api)

    before = snapshot(env)
    refused = api.post("/monitoring/demo/check", ("alice", "write"))
    assert refused.status_code == 403 and refused.json() == {
        "error": "forbidden",
        "field": None,
        "message": "alice (analyst) may not deploy, roll out or undeploy models and manage their API keys",
    }
    assert snapshot(env) == before
    read_only = api.post("/monitoring/demo/check", ("rita", "read"))
    assert read_only.status_code == 403 and read_only.json()["field"] == "scope"
    only_audited_refusal(env, before)

    made = api.ok(api.post("/monitoring/demo/check", ("rita", "write")))["report"]
    assert (made["deployment"], made["state"], made["n_prompts"], made["model_version"]) == (
        "demo",
        "ok",
        40,
        "tiny-sft:v1",
    )
    assert set(made["scores"]) == {"length_psi", "oov_rate", "domain_auc"} and made["exceeded"] == []
    with ws.store.session() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "monitoring.check")))
    assert [(e.actor, e.subject, e.detail["state"]) for e in events] == [
        ("rita", "deployment:demo", "no new window"),
        ("rita", "deployment:demo", "ok"),
    ]

    view = api.ok(api.get("/monitoring/demo", params={"hours": 2, "bucket": 60}))
    assert (view["deployment"], view["status"], view["model_version"]) == ("demo", "running", "tiny-sft:v1")
    assert view["samples_stored"] == 40 and sum(t["samples"] for t in view["traffic"]) == 40  # buckets from now
    assert {"requests_per_min", "error_rate", "latency_p95_ms"} <= set(view["traffic"][0])
    assert [r["id"] for r in view["reports"]] == [made["id"]]
    assert view["policy"] == {"enabled": True, "rate": 0.1, "max_samples": 50_000, "retention_days": 30.0}

    listed = api.ok(api.get("/monitoring/demo/reports", params={"limit": 1}))
    assert [r["id"] for r in listed["items"]] == [made["id"]] and listed["next_offset"] is None
    shown = api.ok(api.get(f"/monitoring/demo/reports/{made['id']}"))
    assert shown == made

    # bad input is named by the field; unknown deployments and reports are 404
    bad = api.get("/monitoring/demo", params={"hours": 0})
    assert (bad.status_code, bad.json()["field"]) == (400, "hours")
    typed = api.get("/monitoring/demo", params={"bucket": "often"})
    assert (typed.status_code, typed.json()["field"]) == (422, "bucket")
    for path in ("/monitoring/nosuch", "/monitoring/nosuch/reports", "/monitoring/nosuch/sampling"):
        missing = api.get(path)
        assert (missing.status_code, missing.json()["field"]) == (404, "deployment"), path
    assert api.post("/monitoring/nosuch/check", ("rita", "write")).status_code == 404
    _deployment(ws, ws.repo.sync_main(), config_path="configs/other.yaml", name="other")
    elsewhere = api.get(f"/monitoring/other/reports/{made['id']}")
    assert (elsewhere.status_code, elsewhere.json()["field"]) == (404, "report")


def test_sampling_policy_is_read_by_all_and_changed_by_reviewers_with_bad_values_named(api):
    env = api.env
    ws = env.ws
    _deployment(ws, ws.repo.sync_main())
    assert api.ok(api.get("/monitoring/demo/sampling"))["enabled"] is True

    warm(api)

    before = snapshot(env)
    refused = api.call("PATCH", "/monitoring/demo/sampling", ("alice", "write"), json={"enabled": False})
    assert refused.status_code == 403 and "alice (analyst) may not deploy" in refused.json()["message"]
    for body, status, field in (
        ({"rate": 2}, 400, "rate"),
        ({"max_samples": 0}, 400, "max_samples"),
        ({"retention_days": -1}, 400, "retention_days"),
        ({"rate": "half"}, 422, "rate"),
    ):
        bad = api.call("PATCH", "/monitoring/demo/sampling", ("rita", "write"), json=body)
        assert (bad.status_code, bad.json()["field"]) == (status, field), bad.text
    assert bad.json()["message"].startswith("rate: ")
    assert snapshot(env) == before
    read_only = api.call("PATCH", "/monitoring/demo/sampling", ("rita", "read"), json={"enabled": False})
    assert read_only.status_code == 403
    only_audited_refusal(env, before)

    changed = api.ok(
        api.call("PATCH", "/monitoring/demo/sampling", ("rita", "write"), json={"enabled": False, "rate": 0.5})
    )
    assert changed == {"enabled": False, "rate": 0.5, "max_samples": 50_000, "retention_days": 30.0}
    with ws.store.session() as s:
        assert samples.policy(s, "demo") == samples.Policy(enabled=False, rate=0.5)
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "monitoring.sampling"))
    assert (event.actor, event.subject, event.detail["rate"]) == ("rita", "deployment:demo", 0.5)
    assert api.ok(api.get("/monitoring/demo/sampling", ("admin", "read"))) == changed


# ---- /retrain ----------------------------------------------------------------------------------------------------


def test_retrain_check_opens_a_request_and_the_lists_say_so(api, tmp_path):
    env = api.env
    deployed(env)
    push_data(env, tmp_path)
    warm(api)
    before = snapshot(env)
    read_only = api.post("/retrain/check", ("alice", "read"))
    assert read_only.status_code == 403 and read_only.json()["field"] == "scope"
    only_audited_refusal(env, before)
    assert bot_requests(env) == []

    report = api.ok(api.post("/retrain/check", ("alice", "write")))
    [(cr, *_)] = bot_requests(env)
    assert report["checked"] == 1 and report["problems"] == []
    [handled] = report["handled"]
    assert (handled["deployment"], handled["outcome"], handled["change_request"]) == ("tiny", "opened", cr)
    assert handled["evidence_ref"].startswith("dataset-version:sha256:")

    signals = api.ok(api.get("/retrain/signals"))
    [signal] = signals["items"]
    assert (signal["kind"], signal["model_name"], signal["outcome"], signal["change_request"]) == (
        "dataset",
        "tiny",
        "opened",
        cr,
    )
    assert api.ok(api.get("/retrain/signals", params={"model": "other"}))["items"] == []
    requests = api.ok(api.get("/retrain/requests", params={"limit": 1}))
    [request] = requests["items"]
    assert (request["model_name"], request["change_request"], request["state"]) == ("tiny", cr, "open")
    assert requests["next_offset"] is None
    assert api.ok(api.get("/retrain/requests", params={"offset": 1}))["items"] == []
    bad = api.get("/retrain/signals", params={"limit": 0})
    assert (bad.status_code, bad.json()["field"]) == (422, "limit")

    again = api.ok(api.post("/retrain/check", ("rita", "write")))
    assert [h["outcome"] for h in again["handled"]] == ["duplicate"] and len(bot_requests(env)) == 1
