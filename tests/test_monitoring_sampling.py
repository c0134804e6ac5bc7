"""Request sampling through the real gateway (uvicorn, httpx) in front of the stub model server, into a real store
(SQLite and PostgreSQL): redaction, caps, binary prompts, the per-deployment policy, cap and retention, and a store
that is down (requests still served, samples dropped and counted on /metrics)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from backend.errors import LfopsError
from backend.monitoring import samples
from backend.monitoring.prompts import EMAIL_HIDDEN, clean_prompt, tokens
from backend.monitoring.sampler import RequestSampler
from backend.redaction import HIDDEN
from backend.serving.gateway import Gateway, GatewayConfig, Upstream
from backend.serving.httpserver import serving
from backend.serving.keys import KeyRing, new_api_key
from backend.store import Store
from backend.store.models import RequestSample
from tests.helpers import free_port, wait_for
from tests.serving_stub import StubModelServer
from tests.test_serving_gateway import metric

HF_TOKEN = "hf_" + "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gH3j"
OPENAI_KEY = "sk-proj-" + "Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv1Wx2Yz3"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = request.getfixturevalue("pg_database") if request.param == "postgresql" else f"sqlite:///{tmp_path}/s.db"
    st = Store(url)
    st.upgrade()
    yield st
    st.dispose()


@pytest.fixture
def stub():
    server = StubModelServer(chunks=3)
    with serving(server) as http:
        server.url = http.url
        yield server


def _gateway(stub, sampler):
    key, stored = new_api_key()
    gw = Gateway(GatewayConfig("demo", Upstream(stub.url, "tiny-sft:v1")), KeyRing([stored]), observers=[sampler])
    return gw, {"authorization": f"Bearer {key}"}


def _chat(url, headers, content, **extra):
    body = {"model": "stub", "messages": [{"role": "user", "content": content}], **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def _rows(store):
    with store.session() as s:
        return list(s.scalars(select(RequestSample).order_by(RequestSample.id)))


def test_sampled_prompts_are_redacted_capped_and_binary_ones_counted_not_stored(store, stub):
    sampler = RequestSampler("demo", store, flush_interval_s=0.05)
    with store.session() as s:
        samples.set_policy(s, "demo", samples.Policy(rate=1.0), "test")
    sampler._policy_read_at = 0  # read the policy on the next pass
    gw, headers = _gateway(stub, sampler)
    with serving(gw.app) as http:
        wait_for(lambda: sampler.policy.rate == 1.0, 10, 0.05, "the policy read")
        secret = f"my key is {OPENAI_KEY}, token={HF_TOKEN}, mail bob.smith@example.org, Bearer abcdef123456"
        assert _chat(http.url, headers, secret).status_code == 200
        assert _chat(http.url, headers, "x" * 50_000).status_code == 200
        assert _chat(http.url, headers, "\x00\x01\x02\x03binary\x04\x05" * 20).status_code == 200
        assert _chat(http.url, headers, "What is 2 plus 3?", stream=True).status_code == 200
        assert httpx.get(http.url + "/v1/models", headers=headers).status_code == 200  # not a prompt: not sampled
        wait_for(lambda: len(_rows(store)) == 4, 10, 0.05, "four samples stored")
        rows = _rows(store)
        assert metric(http.url, "lfops_gateway_samples_total", outcome="stored") == 4
        assert metric(http.url, "lfops_gateway_sampled_prompts_total", kind="truncated") == 1
        assert metric(http.url, "lfops_gateway_sampled_prompts_total", kind="binary") == 1
        assert metric(http.url, "lfops_gateway_sampled_prompts_total", kind="redacted") == 1
    redacted = rows[0]
    for secret_part in (OPENAI_KEY, HF_TOKEN, "bob.smith@example.org", "abcdef123456"):
        assert secret_part not in redacted.prompt
    assert HIDDEN in redacted.prompt and EMAIL_HIDDEN in redacted.prompt and redacted.redactions >= 3
    assert (redacted.status, redacted.prompt_tokens, redacted.completion_tokens) == (200, 7, 3)
    assert redacted.model_version == "tiny-sft:v1" and redacted.latency_ms > 0 and redacted.weight == 1.0
    huge = rows[1]
    assert huge.prompt_truncated and huge.prompt_chars == len("user: ") + 50_000 and len(huge.prompt) <= 4000
    binary = rows[2]
    assert binary.prompt_binary and binary.prompt == "" and binary.prompt_chars > 0
    assert rows[3].stream and rows[3].prompt == "user: What is 2 plus 3?"


def test_sampling_off_rate_cap_and_retention(store, stub):
    with store.session() as s:
        samples.set_policy(s, "demo", samples.Policy(enabled=False, rate=1.0), "test")
    sampler = RequestSampler("demo", store, flush_interval_s=0.05, policy_refresh_s=0.1)
    gw, headers = _gateway(stub, sampler)
    with serving(gw.app) as http:
        wait_for(lambda: not sampler.policy.enabled, 10, 0.05, "the policy read")
        for _ in range(5):
            assert _chat(http.url, headers, "hello").status_code == 200
        sampler.flush()
        assert _rows(store) == [] and sampler.counts["stored"] == 0
        with store.session() as s:  # on again, capped at 3: the oldest go
            samples.set_policy(s, "demo", samples.Policy(rate=1.0, max_samples=3), "test")
        wait_for(lambda: sampler.policy.enabled, 10, 0.05, "the new policy read")
        sampler._prune_interval_s = 0.0
        for i in range(6):
            assert _chat(http.url, headers, f"prompt {i}").status_code == 200
        wait_for(lambda: sampler.counts["stored"] == 6, 10, 0.05, "six stored")
        wait_for(lambda: len(_rows(store)) == 3, 10, 0.05, "the cap applied")
    assert [r.prompt for r in _rows(store)] == ["user: prompt 3", "user: prompt 4", "user: prompt 5"]
    with store.session() as s:  # retention: samples older than the period go
        s.execute(RequestSample.__table__.update().values(at=datetime.now(UTC) - timedelta(days=40)))
        assert samples.prune(s, "demo", samples.Policy(retention_days=30)) == 3
        assert samples.count(s, "demo") == 0


def test_a_store_that_is_down_drops_samples_counted_and_requests_are_still_served(stub):
    down = Store(f"postgresql+psycopg://lfops:pw@127.0.0.1:{free_port()}/nothing")
    sampler = RequestSampler("demo", down, flush_interval_s=0.05, random_source=lambda: 0.0)
    gw, headers = _gateway(stub, sampler)
    with serving(gw.app) as http:
        for _ in range(5):
            assert _chat(http.url, headers, "still served").status_code == 200
        wait_for(
            lambda: metric(http.url, "lfops_gateway_samples_total", outcome="dropped_store_unavailable") == 5,
            10,
            0.05,
            "five drops counted",
        )
        assert metric(http.url, "lfops_gateway_samples_total", outcome="stored") == 0


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    sampler = RequestSampler("demo", store, max_pending=2, start=False)  # no writer: the queue stays full
    from backend.serving.observers import RequestRecord

    record = RequestRecord("demo", "m:v1", "/v1/completions", 200, False, 0.0, 0.01, None, 1, 1, 1, "k", prompt="p")
    for _ in range(5):
        sampler.observe(record)
    assert sampler.counts["dropped_queue_full"] == 3


def test_bad_policy_values_are_refused_with_the_field_named_and_nothing_changes(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    for changes, message in (
        ({"rate": 1.5}, "rate: must be from 0 to 1, got 1.5"),
        ({"max_samples": 0}, "max_samples: must be from 1 to 10000000, got 0"),
        ({"retention_days": -1}, "retention_days: must be more than 0 and at most 3650, got -1"),
    ):
        with pytest.raises(LfopsError) as err, store.session() as s:
            samples.set_policy(s, "demo", samples.updated(samples.DEFAULT_POLICY, **changes), "test")
        assert str(err.value) == message and err.value.field == next(iter(changes))
    with store.session() as s:
        assert samples.policy(s, "demo") == samples.DEFAULT_POLICY


def test_clean_prompt_and_tokens():
    assert clean_prompt("mail me: a.b@c.io").text == f"mail me: {EMAIL_HIDDEN}"
    assert clean_prompt("password: hunter2hunter2").text == f"password: {HIDDEN}"
    assert clean_prompt("What is 2 plus 3?").redactions == 0
    assert tokens("What is 2 plus 3?") == ["what", "is", "2", "plus", "3", "?"]
    assert json.dumps(clean_prompt("\ufffd" * 10).__dict__)  # binary: serialisable, empty


def test_a_local_deployments_gateway_process_samples_into_the_workspace_store(env, stub):
    """The wiring as `lfops deploy` makes it: the workspace gives each local gateway the sampler and the store's URL;
    the gateway process (its own interpreter) writes the samples (the model server is the stub here)."""
    from backend.serving.gateway import write_upstream_file
    from backend.serving.httpserver import bind_socket
    from backend.serving.keys import write_keys_file
    from backend.serving.local_server import LocalDeployment

    options = env.ws.serving.local.options
    deployment = LocalDeployment(env.ws.settings.workspace / "serving", "demo", **options)
    deployment.dir.mkdir(parents=True)
    key, stored = new_api_key()
    write_keys_file(deployment.dir / "keys.json", [stored])
    write_upstream_file(deployment.dir / "upstream.json", Upstream(stub.url, "tiny-sft:v1"))
    with env.ws.store.session() as s:
        samples.set_policy(s, "demo", samples.Policy(rate=1.0), "test")
    sock = bind_socket("127.0.0.1", 0)
    deployment._start_gateway(sock)
    sock.close()
    try:
        url = f"http://127.0.0.1:{deployment.gateway.record().port}"
        headers = {"authorization": f"Bearer {key}"}
        wait_for(
            lambda: metric(url, "lfops_gateway_samples_total") >= 0 and _policy_read(url, headers),
            30,
            0.5,
            "the policy",
        )
        assert _chat(url, headers, "What is 4 times 5? mail me at a@b.org").status_code == 200
        wait_for(lambda: any("4 times 5" in r.prompt for r in _rows(env.ws.store)), 30, 0.2, "the sample stored")
    finally:
        deployment.gateway.stop(5)
    (row,) = [r for r in _rows(env.ws.store) if "4 times 5" in r.prompt]
    assert row.deployment == "demo" and EMAIL_HIDDEN in row.prompt and "a@b.org" not in row.prompt


def _policy_read(url, headers) -> bool:
    """Requests until one is sampled (the gateway reads the policy, rate 1.0, within its first pass)."""
    _chat(url, headers, "warm-up")
    return metric(url, "lfops_gateway_samples_total", outcome="stored") > 0
