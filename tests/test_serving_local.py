"""Local serving for real: a registry version trained in this session (approved config -> local run -> registry),
served by LLaMA-Factory's own `llamafactory-cli api` behind the lfops gateway process, called with the `openai`
client and httpx. The supervisor restarts a killed model server; a rollout to an exported version under continuous
load fails no request; bad input leaves nothing running.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from backend.errors import Conflict, NotFound, TimedOut
from backend.serving.httpserver import bind_socket, free_port
from backend.serving.keys import new_api_key
from backend.serving.local_server import LocalDeployment, LocalSupervisor, ModelServerSpec
from tests.helpers import wait_for
from tests.runs_fixtures import approved_merge
from tests.test_serving_gateway import metric

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "What is 2 plus 3?"}]


def processes_under(root: Path) -> list[psutil.Process]:
    """Every process whose command line points into `root` (model servers and gateways of these tests)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(root) in part for part in proc.info["cmdline"] or []):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _ready(base: str) -> bool:
    try:
        return httpx.get(base + "/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def kill_all_under(root: Path) -> None:
    for proc in processes_under(root):
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def registered(template_workspace, tmp_path_factory):
    """A LoRA version of the tiny model, trained and registered the way users get one; and its merged export."""
    from tests.workspace_fixtures import make_env

    env = make_env(template_workspace, tmp_path_factory.mktemp("serving") / "ws")
    cr, _ = approved_merge(env, "tiny-serve")
    alice = env.actor("alice")
    env.ws.runs.start_monitor(interval=0.1)
    try:
        run = env.ws.runs.launch(alice, cr)
        final = env.ws.runs.wait(alice, run.id, timeout=300)
    finally:
        env.ws.runs.stop_monitor()
    assert final.status == "succeeded", final.reason
    adapter = env.ws.registry.for_run(run.id)
    yield env, adapter
    env.ws.store.dispose()


@pytest.fixture(scope="module")
def serving_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-state")
    yield root
    kill_all_under(root)


@pytest.fixture(scope="module")
def deployed(registered, serving_root):
    """The adapter version deployed on a free port with one API key; stopped (and checked) at the end."""
    _, adapter = registered
    key, stored = new_api_key()
    deployment = LocalDeployment(serving_root, "tiny", ready_timeout_s=240)
    spec = ModelServerSpec.from_version_dir(Path(adapter.artifact_uri))
    status = deployment.start(spec, free_port(), [stored])
    yield deployment, status, key
    if deployment.state() is not None:
        deployment.stop()


def test_version_spec_comes_from_the_registry_manifest(registered):
    env, adapter = registered
    spec = ModelServerSpec.from_version_dir(Path(adapter.artifact_uri))
    assert spec.model_version == adapter.ref == "tiny-serve:v1" and spec.kind == "adapter"
    assert spec.base_model == env.ws.registry.manifest(env.actor("alice"), adapter.ref)["base_model"]
    assert (Path(spec.base_model) / "config.json").is_file()
    args = spec.llamafactory_args()
    assert args == {
        "template": "default",
        "infer_backend": "huggingface",
        "model_name_or_path": spec.base_model,
        "adapter_name_or_path": adapter.artifact_uri,
        "finetuning_type": "lora",
    }


def test_chat_stream_wrong_key_metrics_and_readyz_through_the_gateway(deployed):
    deployment, status, key = deployed
    assert status.state == "running" and status.model_version == "tiny-serve:v1"
    base = status.endpoint.removesuffix("/v1")
    client = openai.OpenAI(base_url=status.endpoint, api_key=key, max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    answer = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=8)
    assert answer.choices[0].message.role == "assistant"
    assert answer.usage.prompt_tokens > 0 and 0 < answer.usage.completion_tokens <= 8
    chunks = list(client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=8, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length") and isinstance(text, str)

    wrong = openai.OpenAI(base_url=status.endpoint, api_key="lfk_00000000_" + "A" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=8)
    # the model server itself refuses callers that bypass the gateway: it has a key of its own
    upstream_port = deployment.model_server(1).record().port
    direct = httpx.post(
        f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
        json={"model": "tiny", "messages": QUESTION},
        timeout=30,
    )
    assert direct.status_code == 401

    assert (
        metric(
            base,
            "lfops_gateway_requests_total",
            deployment="tiny",
            model_version="tiny-serve:v1",
            route="/v1/chat/completions",
            status="200",
        )
        == 2
    )
    assert metric(base, "lfops_gateway_requests_total", model_version="tiny-serve:v1", status="401") == 1
    # time to the first token: the streamed answer's, when the random tiny model wrote any text before stopping
    ttft_count = metric(base, "lfops_gateway_time_to_first_token_seconds_count", model_version="tiny-serve:v1")
    assert ttft_count == (1 if text else 0)
    assert metric(base, "lfops_gateway_tokens_total", direction="out", model_version="tiny-serve:v1") > 0
    ready = httpx.get(base + "/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "model_version": "tiny-serve:v1", "draining": 0}
    # prompts do not reach the model server's log (API_VERBOSE=0)
    assert "2 plus 3" not in deployment.model_server(1).log_path.read_text()


def test_killed_model_server_is_restarted_and_a_new_app_reattaches(deployed, serving_root):
    deployment, status, key = deployed
    base = status.endpoint.removesuffix("/v1")
    old_pid = status.model_server_pid
    supervisor = LocalSupervisor(serving_root, interval_s=0.2).start()
    try:
        os.kill(old_pid, signal.SIGKILL)
        wait_for(
            lambda: deployment.model_server(1).alive() and deployment.status().model_server_pid != old_pid,
            timeout=30,
            what="the model server started again",
        )
        wait_for(lambda: _ready(base), timeout=240, what="the restarted model server ready")
        # the gateway dies too: started again on the same port, the endpoint stays what clients know
        os.kill(status.gateway_pid, signal.SIGKILL)
        wait_for(
            lambda: deployment.gateway.alive() and deployment.status().gateway_pid != status.gateway_pid,
            timeout=30,
            what="the gateway started again",
        )
        wait_for(lambda: _ready(base), timeout=60, what="the restarted gateway ready")
    finally:
        supervisor.stop()
    after = deployment.status()
    assert after.state == "running" and after.model_server_restarts == 1 and after.gateway_restarts == 1
    assert after.endpoint == status.endpoint
    client = openai.OpenAI(base_url=status.endpoint, api_key=key, max_retries=0, timeout=120)
    assert client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=4).choices
    # the app restarts: a fresh object finds both processes by pid + create time, and restarts nothing
    fresh = LocalDeployment(serving_root, "tiny")
    again = fresh.status()
    assert (again.state, again.model_server_pid, again.gateway_pid) == (
        "running",
        after.model_server_pid,
        after.gateway_pid,
    )
    assert LocalSupervisor(serving_root).advance() == {}


def test_rollout_to_the_merged_version_under_load_fails_no_request(deployed, registered):
    env, adapter = registered
    deployment, status, key = deployed
    merged = env.ws.registry.export(env.actor("admin"), adapter.ref)
    assert merged.kind == "full" and merged.ref == "tiny-serve:v2"
    failures, counts, done = [], {"tiny-serve:v1": 0, "tiny-serve:v2": 0}, threading.Event()
    base = status.endpoint.removesuffix("/v1")

    def client_loop() -> None:
        with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=120) as c:
            while not done.is_set():
                r = c.post(base + "/v1/chat/completions", json={"model": "tiny", "messages": QUESTION, "max_tokens": 4})
                if r.status_code != 200:
                    failures.append((r.status_code, r.text[:200]))
                version = httpx.get(base + "/readyz", timeout=10).json()["model_version"]
                counts[version] = counts.get(version, 0) + 1

    threads = [threading.Thread(target=client_loop) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        started = time.monotonic()
        rolled = deployment.rollout(ModelServerSpec.from_version_dir(Path(merged.artifact_uri)))
        switch_s = time.monotonic() - started
        time.sleep(1.0)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert failures == []
    assert rolled.model_version == "tiny-serve:v2" and counts["tiny-serve:v1"] > 0 and counts["tiny-serve:v2"] > 0
    assert not deployment.model_server(1).alive() and deployment.model_server(2).alive()
    assert metric(base, "lfops_gateway_requests_total", model_version="tiny-serve:v2", status="200") > 0
    print(f"rollout took {switch_s:.1f} s (new model server load included)")


def test_stop_leaves_nothing_running_and_twice_is_a_clear_error(deployed, serving_root):
    deployment, status, _ = deployed
    deployment.stop()
    assert processes_under(serving_root / "tiny") == []
    assert deployment.status().state == "stopped"
    with pytest.raises(NotFound, match="deployment tiny is not running locally"):
        deployment.stop()
    bind_socket("127.0.0.1", int(status.endpoint.rsplit(":", 1)[1].removesuffix("/v1"))).close()  # port is free


def test_model_server_that_never_becomes_ready_times_out_and_nothing_is_left(registered, serving_root):
    _, adapter = registered
    _, stored = new_api_key()
    port = free_port()
    deployment = LocalDeployment(serving_root, "never-ready", ready_timeout_s=2, stop_grace_s=2)
    spec = ModelServerSpec.from_version_dir(Path(adapter.artifact_uri))
    with pytest.raises(TimedOut) as err:
        deployment.start(spec, port, [stored])
    assert "model server of never-ready (tiny-serve:v1) was not ready after 2 s and was stopped" in str(err.value)
    assert processes_under(serving_root / "never-ready") == []
    assert deployment.state() is None and deployment.status().state == "stopped"
    bind_socket("127.0.0.1", port).close()  # the gateway's port was given back


def test_port_in_use_and_missing_base_model_are_refused_before_anything_starts(registered, serving_root, tmp_path):
    _, adapter = registered
    _, stored = new_api_key()
    spec = ModelServerSpec.from_version_dir(Path(adapter.artifact_uri))
    taken = bind_socket("127.0.0.1", 0)
    port = taken.getsockname()[1]
    deployment = LocalDeployment(serving_root, "busy")
    try:
        with pytest.raises(Conflict) as err:
            deployment.start(spec, port, [stored])
    finally:
        taken.close()
    assert str(err.value) == f"port: 127.0.0.1:{port} is already in use" and err.value.field == "port"
    assert processes_under(serving_root / "busy") == [] and deployment.state() is None

    orphan = ModelServerSpec(**{**spec.__dict__, "base_model": str(tmp_path / "gone")})
    with pytest.raises(NotFound, match="base model: .*gone of tiny-serve:v1 is not on this machine"):
        LocalDeployment(serving_root, "orphan").start(orphan, free_port(), [stored])
    with pytest.raises(NotFound, match="has no manifest.json"):
        ModelServerSpec.from_version_dir(tmp_path)
    assert processes_under(serving_root) == []
