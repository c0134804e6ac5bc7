"""The serving gateway over real HTTP: uvicorn serving the gateway in front of a small OpenAI-like server
(tests/serving_stub.py), called with httpx and the official `openai` client. Nothing is mocked; the model server
behind it is a stub so that these tests take seconds (test_serving_local.py puts LLaMA-Factory's own server there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from backend.serving.gateway import Gateway, GatewayConfig, Upstream, write_upstream_file
from backend.serving.httpserver import bind_socket, serving
from backend.serving.keys import KeyRing, new_api_key, read_keys_file, write_keys_file
from backend.serving.observers import RequestRecord, prompt_text
from tests.helpers import wait_for
from tests.serving_stub import StubModelServer

CHAT = {"model": "stub", "messages": [{"role": "user", "content": "What is 2 plus 3?"}]}
ROOT = Path(__file__).resolve().parents[1]


def samples(gateway_url: str) -> dict[tuple, float]:
    """/metrics as {(name, sorted labels...): value}."""
    out = {}
    for family in text_string_to_metric_families(httpx.get(gateway_url + "/metrics").text):
        for s in family.samples:
            out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


def metric(gateway_url: str, name: str, **labels) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for key, value in samples(gateway_url).items():
        if key[0] == name and all((k, v) in key[1:] for k, v in labels.items()):
            total += value
    return total


class Recorder:
    def __init__(self, wants: bool = True, fail: bool = False, sleep_s: float = 0.0) -> None:
        self.records: list[RequestRecord] = []
        self._wants, self.fail, self.sleep_s = wants, fail, sleep_s
        self.got = threading.Event()

    def wants(self, route: str) -> bool:
        if self.fail:
            raise RuntimeError("observer broken on purpose")
        return self._wants

    def observe(self, record: RequestRecord) -> None:
        time.sleep(self.sleep_s)
        self.records.append(record)
        self.got.set()


@pytest.fixture
def stub():
    server = StubModelServer(api_key="upstream-secret", chunks=5)
    with serving(server) as http:
        server.url = http.url
        yield server


@pytest.fixture
def gateway(stub, tmp_path):
    """A gateway with one key, in front of the stub; yields (url, key, Gateway)."""
    key, stored = new_api_key()
    write_keys_file(tmp_path / "keys.json", [stored])
    write_upstream_file(tmp_path / "upstream.json", Upstream(stub.url, "tiny-sft:v1", "upstream-secret"))
    config = GatewayConfig(
        "demo",
        Upstream("http://127.0.0.1:9", "unused:v0"),  # the upstream file wins
        keys_file=tmp_path / "keys.json",
        upstream_file=tmp_path / "upstream.json",
        reload_interval_s=0.05,
    )
    recorder = Recorder()
    gw = Gateway(config, observers=[recorder])
    gw.recorder = recorder
    with serving(gw.app) as http:
        yield http.url, key, gw


def test_chat_completion_passes_through_with_usage_and_only_the_upstream_key_goes_upstream(gateway, stub):
    url, key, _ = gateway
    r = httpx.post(url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "tok tok tok tok tok"
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    assert stub.seen_authorization[-1] == "Bearer upstream-secret"
    assert all(key not in seen for seen in stub.seen_authorization)
    models = httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {key}"}).json()
    assert models["data"][0]["id"] == "stub"
    completion = httpx.post(
        url + "/v1/completions", json={"prompt": "2+3=", "model": "stub"}, headers={"authorization": f"Bearer {key}"}
    )
    assert completion.json()["choices"][0]["text"].startswith("tok")


def test_openai_client_chat_stream_and_wrong_key(gateway):
    url, key, _ = gateway
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    answer = client.chat.completions.create(model="stub", messages=CHAT["messages"])
    assert answer.usage.completion_tokens == 5 and answer.choices[0].message.content
    pieces = [
        c.choices[0].delta.content
        for c in client.chat.completions.create(model="stub", messages=CHAT["messages"], stream=True)
        if c.choices and c.choices[0].delta.content
    ]
    assert pieces == [f"tok{i} " for i in range(5)]
    for bad in ("lfk_00000000_" + "x" * 43, key[:-1] + ("A" if key[-1] != "A" else "B"), ""):
        wrong = openai.OpenAI(base_url=url + "/v1", api_key=bad or "none", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            wrong.chat.completions.create(model="stub", messages=CHAT["messages"])
        assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    assert httpx.post(url + "/v1/chat/completions", json=CHAT).status_code == 401  # no header at all
    assert httpx.post(url + "/v1/chat/completions", json=CHAT, headers={"authorization": key}).status_code == 401
    assert metric(url, "lfops_gateway_requests_total", status="401", model_version="tiny-sft:v1") == 5
    assert metric(url, "lfops_gateway_auth_failures_total") == 5


def test_stream_is_relayed_chunk_by_chunk_and_measured(gateway, stub):
    url, key, _ = gateway
    stub.chunk_delay_s = 0.3
    arrivals = []
    started = time.perf_counter()
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers={"authorization": f"Bearer {key}"}
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data:"):
                arrivals.append((time.perf_counter() - started, line))
    contents = [a for a in arrivals if '"content": "tok' in a[1]]
    assert len(contents) == 5 and arrivals[-1][1] == "data: [DONE]"
    # the first token reached the client long before the stream ended: nothing was buffered
    assert contents[0][0] < 0.9 and arrivals[-1][0] > 1.4
    assert metric(url, "lfops_gateway_time_to_first_token_seconds_count", model_version="tiny-sft:v1") == 1
    ttft = metric(url, "lfops_gateway_time_to_first_token_seconds_sum")
    assert 0.25 < ttft < 0.9
    assert metric(url, "lfops_gateway_tokens_total", direction="out") == 5  # counted chunks (no usage in streams)
    assert metric(url, "lfops_gateway_requests_total", route="/v1/chat/completions", status="200") == 1


def test_metrics_count_calls_by_status_with_version_labels_and_in_flight(gateway, stub):
    url, key, _ = gateway
    headers = {"authorization": f"Bearer {key}"}
    for _ in range(3):
        assert httpx.post(url + "/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    stub.delay_s = 1.0
    slow = threading.Thread(
        target=httpx.post,
        args=(url + "/v1/chat/completions",),
        kwargs={"json": CHAT, "headers": headers, "timeout": 10},
    )
    slow.start()
    wait_for(lambda: metric(url, "lfops_gateway_in_flight_requests") == 1, 5, 0.02, "one request in flight")
    assert metric(url, "lfops_gateway_in_flight_requests", deployment="demo", model_version="tiny-sft:v1") == 1
    slow.join()
    assert metric(url, "lfops_gateway_in_flight_requests") == 0
    assert (
        metric(
            url,
            "lfops_gateway_requests_total",
            deployment="demo",
            model_version="tiny-sft:v1",
            route="/v1/chat/completions",
            status="200",
        )
        == 4
    )
    assert metric(url, "lfops_gateway_request_duration_seconds_count", route="/v1/chat/completions") == 4
    assert metric(url, "lfops_gateway_tokens_total", direction="in") == 28
    assert metric(url, "lfops_gateway_tokens_total", direction="out") == 20
    # one registry per gateway: nothing in prometheus_client's global registry
    assert (
        REGISTRY.get_sample_value(
            "lfops_gateway_in_flight_requests", {"deployment": "demo", "model_version": "tiny-sft:v1"}
        )
        is None
    )


def test_healthz_readyz_and_upstream_failures(tmp_path):
    key, stored = new_api_key()
    dead = bind_socket("127.0.0.1", 0)  # a port nobody answers on (bound, never accepted)
    dead_port = dead.getsockname()[1]
    dead.close()
    gw = Gateway(
        GatewayConfig("demo", Upstream(f"http://127.0.0.1:{dead_port}", "m:v1"), read_timeout_s=0.5), KeyRing([stored])
    )
    headers = {"authorization": f"Bearer {key}"}
    with serving(gw.app) as http:
        assert httpx.get(http.url + "/healthz").json() == {"status": "ok"}
        ready = httpx.get(http.url + "/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        r = httpx.post(http.url + "/v1/chat/completions", json=CHAT, headers=headers)
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"
        assert metric(http.url, "lfops_gateway_upstream_errors_total", reason="unreachable") == 1
        slow = StubModelServer(delay_s=2.0)
        with serving(slow) as up:
            gw.switch(Upstream(up.url, "m:v2"))
            ready = httpx.get(http.url + "/readyz")
            assert ready.status_code == 200 and ready.json() == {"ready": True, "model_version": "m:v2", "draining": 0}
            r = httpx.post(http.url + "/v1/chat/completions", json=CHAT, headers=headers, timeout=10)
            assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
            assert metric(http.url, "lfops_gateway_requests_total", status="504", model_version="m:v2") == 1
        big = httpx.post(http.url + "/v1/chat/completions", content=b"x" * (9 << 20), headers=headers)
        assert big.status_code == 413


def test_observer_gets_each_request_off_the_request_path_and_never_fails_it(gateway, stub):
    url, key, gw = gateway
    headers = {"authorization": f"Bearer {key}"}
    r = httpx.post(
        url + "/v1/chat/completions",
        json={
            **CHAT,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 2 plus 3?"}],
        },
        headers=headers,
    )
    assert r.status_code == 200
    assert gw.recorder.got.wait(5)
    record = gw.recorder.records[0]
    assert record.prompt == "system: be brief\nuser: What is 2 plus 3?" and not record.prompt_truncated
    assert (record.status, record.stream, record.prompt_tokens, record.completion_tokens) == (200, False, 7, 5)
    assert record.model_version == "tiny-sft:v1" and record.deployment == "demo"
    assert record.key_id == key.split("_")[1] and key not in repr(record)
    assert record.latency_s > 0 and record.response_chars == len("tok tok tok tok tok")

    # a slow observer and a broken one: requests are neither slowed nor failed
    slow, broken = Recorder(sleep_s=0.5), Recorder(fail=True)
    gw.dispatcher.observers = (slow, broken)
    started = time.perf_counter()
    for _ in range(5):
        assert httpx.post(url + "/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    assert time.perf_counter() - started < 2.0  # five requests; the slow observer alone takes 2.5 s
    assert metric(url, "lfops_gateway_observer_errors_total", reason="wants_error") == 5
    assert slow.got.wait(5)
    with httpx.stream("POST", url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers) as s:
        s.read()
    wait_for(lambda: any(r.stream for r in slow.records), 10, 0.05, "the streamed request observed")
    streamed = next(r for r in slow.records if r.stream)
    assert streamed.ttft_s is not None and streamed.completion_tokens == 5 and streamed.prompt_tokens is None
    assert streamed.error == "" and streamed.status == 200

    # a client that goes away mid-stream: the request is recorded as such, the upstream stream is closed
    stub.chunk_delay_s = 0.2
    with httpx.stream("POST", url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers) as s:
        for line in s.iter_lines():
            if "tok0" in line:
                break
    wait_for(lambda: any(r.error for r in slow.records), 20, 0.05, "the abandoned stream observed")
    gone = next(r for r in slow.records if r.error)
    assert gone.error == "client_disconnected" and gone.stream and gone.completion_tokens < 5
    assert metric(url, "lfops_gateway_in_flight_requests") == 0


def test_prompt_text_is_capped_and_never_guessed():
    long = json.dumps({"messages": [{"role": "user", "content": "a" * 50_000}]}).encode()
    text, full = prompt_text("/v1/chat/completions", long, max_chars=100)
    assert len(text) == 100 and full == len("user: ") + 50_000
    assert prompt_text("/v1/chat/completions", b"\xff\xfe not json") == ("", 0)
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]}]}
    assert prompt_text("/v1/chat/completions", json.dumps(parts).encode()) == ("user: hi", 8)
    assert prompt_text("/v1/completions", b'{"prompt": ["a", "b"]}') == ("a\nb", 3)


def test_keys_are_reloaded_without_restart(gateway, tmp_path):
    url, key, _ = gateway
    second, stored2 = new_api_key()
    call = lambda k: httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {k}"}).status_code  # noqa: E731
    assert (call(key), call(second)) == (200, 401)
    first = read_keys_file(tmp_path / "keys.json")
    write_keys_file(tmp_path / "keys.json", [*first, stored2])
    wait_for(lambda: call(second) == 200, 5, 0.05, "the new key accepted")
    assert (call(key), call(second)) == (200, 200)
    write_keys_file(tmp_path / "keys.json", [stored2])  # revoke the first
    wait_for(lambda: call(key) == 401, 5, 0.05, "the revoked key refused")
    assert (call(key), call(second)) == (401, 200)
    (tmp_path / "keys.json").write_text("{not json")  # a broken file keeps the previous keys
    time.sleep(0.3)
    assert (call(key), call(second)) == (401, 200)


def test_switching_upstream_under_load_fails_no_request(gateway, tmp_path):
    """A rollout as the gateway sees it: the upstream file names a new model server while clients keep calling."""
    url, key, gw = gateway
    v2 = StubModelServer(api_key="v2-secret", chunks=3)
    failures, done, counts = [], threading.Event(), {"v1": 0, "v2": 0}

    def client_loop() -> None:
        with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=10) as c:
            while not done.is_set():
                r = c.post(url + "/v1/chat/completions", json=CHAT)
                if r.status_code != 200:
                    failures.append(r.status_code)
                else:
                    counts["v2" if r.json()["usage"]["completion_tokens"] == 3 else "v1"] += 1

    with serving(v2) as up2:
        threads = [threading.Thread(target=client_loop) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        write_upstream_file(tmp_path / "upstream.json", Upstream(up2.url, "tiny-sft:v2", "v2-secret"))
        wait_for(lambda: httpx.get(url + "/readyz").json()["model_version"] == "tiny-sft:v2", 5, 0.02, "v2 upstream")
        time.sleep(0.5)
        done.set()
        for t in threads:
            t.join()
        assert failures == [] and counts["v1"] > 0 and counts["v2"] > 0
        assert httpx.get(url + "/readyz").json() == {"ready": True, "model_version": "tiny-sft:v2", "draining": 0}
        assert metric(url, "lfops_gateway_requests_total", model_version="tiny-sft:v2", status="200") == counts["v2"]


def test_gateway_process_refuses_a_port_in_use_with_one_line(tmp_path):
    _, stored = new_api_key()
    write_keys_file(tmp_path / "keys.json", [stored])
    taken = bind_socket("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "backend.serving.gateway",
                "--deployment",
                "demo",
                "--upstream",
                "http://127.0.0.1:9",
                "--keys-file",
                str(tmp_path / "keys.json"),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    finally:
        taken.close()
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: port: 127.0.0.1:{port} is already in use"


def test_gateway_process_loads_observers_and_serves(stub, tmp_path):
    """The gateway as lfops runs it (its own process), with a request observer plugged in by `--observer`."""
    key, stored = new_api_key()
    write_keys_file(tmp_path / "keys.json", [stored])
    write_upstream_file(tmp_path / "upstream.json", Upstream(stub.url, "tiny-sft:v7", "upstream-secret"))
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LFOPS_TEST_OBSERVER_FILE": str(tmp_path / "seen.jsonl")}
    command = [
        sys.executable,
        "-m",
        "backend.serving.gateway",
        "--deployment",
        "demo",
        "--upstream-file",
        str(tmp_path / "upstream.json"),
        "--keys-file",
        str(tmp_path / "keys.json"),
        "--fd",
        str(sock.fileno()),
    ]
    proc = subprocess.Popen(
        [*command, "--observer", "tests.serving_stub:jsonl_observer"],
        env=env,
        pass_fds=(sock.fileno(),),
        stderr=subprocess.PIPE,
    )
    sock.close()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url + "/healthz"), timeout=30, what="the gateway process")
        r = httpx.post(url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200
        seen_file = tmp_path / "seen.jsonl"  # the observer may create it before its line is written
        wait_for(lambda: seen_file.exists() and seen_file.read_text().endswith("\n"), timeout=10, what="its line")
        seen = json.loads((tmp_path / "seen.jsonl").read_text().splitlines()[0])
        assert seen["model_version"] == "tiny-sft:v7" and seen["prompt"] == "user: What is 2 plus 3?"
        assert key not in (tmp_path / "seen.jsonl").read_text()
    finally:
        proc.terminate()
        proc.wait(15)
    bad = subprocess.run(
        [*command, "--observer", "tests.serving_stub:nothing"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: observer: cannot load tests.serving_stub:nothing")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
