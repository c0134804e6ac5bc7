"""Serving a registry version on this machine: LLaMA-Factory's own OpenAI server behind the lfops gateway.

    client -> gateway process (host:port, API keys, metrics) -> `llamafactory-cli api` on 127.0.0.1:<free port>

Both are detached processes (backend.serving.process) recorded in the deployment's state directory, so they keep
serving while the app restarts, and a new app finds them again by pid + create time:

    <root>/<deployment>/
      deployment.json        what should run: the model version (spec), the gateway's host and port, generation
      model-server-<g>.yaml  what `llamafactory-cli api` reads (base model, adapter, template, huggingface engine)
      model-server-<g>.json  / .log   the model server of generation g (a rollout starts generation g+1)
      gateway.json / .log    the gateway process
      keys.json              the API keys' sha256 hashes (mode 0600)
      upstream.json          the model server's URL, model version and its own random key (mode 0600)

The gateway is its own process, not a thread of the app: serving survives an app restart or upgrade, the app's
Gradio work and the gateway do not share one GIL, and it is the same entrypoint as the Kubernetes sidecar. It
listens on a socket the app binds first and hands over, so a port in use is a clear error before anything starts.
The model server binds its own port (LLaMA-Factory's `run_api` takes API_PORT): it gets a random API key, so
nothing else on the machine can use it past the gateway, and API_VERBOSE=0, so prompts are not written to its log.

`LocalSupervisor` watches every deployment under the root: a process that ended on its own is started again,
with back-off (1, 2, 4 ... 60 s). Start, stop, rollout and the supervisor hold the deployment's file lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from backend import yamlio
from backend.errors import Conflict, LfopsError, NotFound, TimedOut
from backend.filelock import file_lock
from backend.runners.lfprocess import child_env, llamafactory_cli
from backend.serving.gateway import Upstream, write_upstream_file
from backend.serving.httpserver import bind_socket, free_port
from backend.serving.keys import StoredKey, write_keys_file
from backend.serving.names import check_deployment_name
from backend.serving.process import Backoff, ManagedProcess, ProcessRecord

STATE_FORMAT = "lfops-local-deployment/1"
MANIFEST = "manifest.json"  # backend.registry.MANIFEST (not imported: the registry pulls in the store)
MODEL_SERVER_HOST = "127.0.0.1"
_PORT_TAKEN = "address already in use"


@dataclass(frozen=True)
class ModelServerSpec:
    """What to serve: a registry version directory and what LLaMA-Factory needs to load it."""

    version_dir: str
    model_version: str  # NAME:vN, the label on every metric and request record
    kind: str  # adapter | full
    base_model: str = ""  # adapters: the model the adapter was trained on (local path or hub id)
    template: str = "default"
    finetuning_type: str = "lora"
    trust_remote_code: bool = False

    @classmethod
    def from_version_dir(cls, version_dir: Path) -> ModelServerSpec:
        """Read a registry version's manifest.json (base model, template, kind)."""
        path = Path(version_dir) / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(f"model: {version_dir} has no {MANIFEST} (not a registry version)", field="model") from None
        except ValueError as exc:
            raise LfopsError(f"model: {path} is not valid JSON ({exc})", field="model") from None
        params = (manifest.get("config") or {}).get("params") or {}
        return cls(
            version_dir=str(Path(version_dir).resolve()),
            model_version=f"{manifest.get('name')}:v{manifest.get('version')}",
            kind=manifest.get("kind", "adapter"),
            base_model=str(manifest.get("base_model") or params.get("model_name_or_path") or ""),
            template=str(params.get("template") or "default"),
            finetuning_type=str(params.get("finetuning_type") or "lora"),
            trust_remote_code=bool(params.get("trust_remote_code", False)),
        )

    def check(self) -> None:
        """Refuse what cannot load: a missing version directory, an adapter without its base model on this machine."""
        if not Path(self.version_dir).is_dir():
            raise NotFound(f"model: {self.version_dir} does not exist", field="model")
        if self.kind == "adapter":
            if not self.base_model:
                raise LfopsError(f"model: {self.model_version} names no base model", field="base_model")
            if _looks_local(self.base_model) and not (Path(self.base_model) / "config.json").is_file():
                raise NotFound(
                    f"base model: {self.base_model} of {self.model_version} is not on this machine", field="base_model"
                )

    def llamafactory_args(self) -> dict[str, Any]:
        """The YAML `llamafactory-cli api` reads: the HuggingFace engine (CPU here), the adapter on its base model."""
        args: dict[str, Any] = {"template": self.template, "infer_backend": "huggingface"}
        if self.kind == "adapter":
            args.update(
                model_name_or_path=self.base_model,
                adapter_name_or_path=self.version_dir,
                finetuning_type=self.finetuning_type,
            )
        else:
            args["model_name_or_path"] = self.version_dir
        if self.trust_remote_code:
            args["trust_remote_code"] = True
        return args


def _looks_local(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or Path(model).exists()


@dataclass(frozen=True)
class LocalStatus:
    name: str
    state: str  # running | starting | restarting | stopped
    endpoint: str
    model_version: str
    model_server_pid: int | None
    gateway_pid: int | None
    model_server_restarts: int
    gateway_restarts: int
    reason: str = ""


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def _backend_root() -> str:
    """The directory holding the `backend` package this app runs: the gateway process runs the same code."""
    return str(Path(__file__).resolve().parents[2])


class LocalDeployment:
    """One deployment's processes on this machine."""

    def __init__(
        self,
        root: Path,
        name: str,
        ready_timeout_s: float = 300.0,
        drain_timeout_s: float = 120.0,
        stop_grace_s: float = 10.0,
        cli: Path | None = None,
        observers: Sequence[str] = (),
        observer_env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = check_deployment_name(name)
        # request observers the gateway process loads (MODULE:FACTORY, e.g. request sampling) and what they need
        self.observers = tuple(observers)
        self.observer_env = dict(observer_env or {})
        self.dir = Path(root) / name
        self.ready_timeout_s = ready_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.stop_grace_s = stop_grace_s
        self.cli = Path(cli) if cli else llamafactory_cli()
        self.gateway = ManagedProcess(self.dir, "gateway")
        self._servers: dict[int, ManagedProcess] = {}
        self._backoff = {"model-server": Backoff(), "gateway": Backoff()}
        self._reasons: dict[str, str] = {}

    # ---- state --------------------------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.dir / "deployment.json"

    def state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None

    def model_server(self, generation: int) -> ManagedProcess:
        if generation not in self._servers:
            self._servers[generation] = ManagedProcess(self.dir, f"model-server-{generation}")
        return self._servers[generation]

    @contextlib.contextmanager
    def _locked(self, wait: bool = True) -> Iterator[bool]:
        with file_lock(self.dir / ".lock", wait) as acquired:
            yield acquired

    # ---- start --------------------------------------------------------------------------------------------------

    def start(
        self, spec: ModelServerSpec, port: int, keys: Iterable[StoredKey], host: str = "127.0.0.1"
    ) -> LocalStatus:
        """Start the model server, wait until its model is loaded, then the gateway on host:port.

        All or nothing: on any error every process started here is stopped and the state removed (logs stay)."""
        spec.check()
        with self._locked():
            state = self.state()
            if state is not None and state.get("desired") == "running":
                raise Conflict(f"deployment {self.name} is already running locally", field="name")
            sock = bind_socket(host, port)  # before anything starts: a port in use changes nothing
            try:
                write_keys_file(self.dir / "keys.json", keys)
                upstream_key = secrets.token_urlsafe(32)
                model_port = self._start_model_server(spec, 1, upstream_key)
                write_upstream_file(
                    self.dir / "upstream.json",
                    Upstream(f"http://{MODEL_SERVER_HOST}:{model_port}", spec.model_version, upstream_key),
                )
                self._start_gateway(sock)
                _write_json(
                    self.state_path,
                    {
                        "format": STATE_FORMAT,
                        "name": self.name,
                        "host": host,
                        "port": sock.getsockname()[1],
                        "generation": 1,
                        "spec": asdict(spec),
                        "desired": "running",
                        "started_at": datetime.now(UTC).isoformat(),
                    },
                )
            except BaseException:
                self._stop_all()
                self._clear_state()
                raise
            finally:
                sock.close()  # the gateway process holds its own copy
        return self.status()

    def _model_server_env(self, port: int, upstream_key: str) -> dict[str, str]:
        return child_env(
            {
                "API_HOST": MODEL_SERVER_HOST,
                "API_PORT": str(port),
                "API_KEY": upstream_key,
                "API_MODEL_NAME": self.name,  # what clients see in /v1/models
                "API_VERBOSE": "0",  # LLaMA-Factory logs every prompt otherwise
                "CUDA_VISIBLE_DEVICES": "",  # the local default serves on the CPU
            },
            drop_credentials=True,
            keep=("HF_TOKEN",),  # a hub base model may need it; it is the user's, not the app's
        )

    def _launch_model_server(
        self, spec: ModelServerSpec, generation: int, upstream_key: str, port: int, restarts: int = 0
    ) -> ProcessRecord:
        if not self.cli.exists():
            raise LfopsError(f"model server: {self.cli} does not exist (is llamafactory installed here?)")
        yaml_path = self.dir / f"model-server-{generation}.yaml"
        yaml_path.write_text(yamlio.dump(spec.llamafactory_args()))
        return self.model_server(generation).start(
            [str(self.cli), "api", str(yaml_path)],
            self._model_server_env(port, upstream_key),
            cwd=self.dir,
            port=port,
            restarts=restarts,
            extra={"model_version": spec.model_version},
        )

    def _start_model_server(self, spec: ModelServerSpec, generation: int, upstream_key: str) -> int:
        """Start and wait until /v1/models answers; a port taken meanwhile is retried on another one."""
        for _attempt in range(3):
            port = free_port(MODEL_SERVER_HOST)
            self._launch_model_server(spec, generation, upstream_key, port)
            try:
                self._wait_model_server(generation, port, upstream_key, spec.model_version)
                return port
            except _PortTaken:
                continue
        raise Conflict(f"model server of {self.name}: no free port after 3 attempts")

    def _wait_model_server(self, generation: int, port: int, upstream_key: str, version: str) -> None:
        proc = self.model_server(generation)
        deadline = time.monotonic() + self.ready_timeout_s
        url = f"http://{MODEL_SERVER_HOST}:{port}/v1/models"
        with httpx.Client(timeout=2.0, headers={"authorization": f"Bearer {upstream_key}"}) as client:
            while True:
                if not proc.alive():
                    tail = proc.log_tail()
                    proc.stop(0)
                    if any(_PORT_TAKEN in line for line in tail[-20:]):
                        raise _PortTaken()
                    raise LfopsError(
                        f"model server of {self.name} ({version}) ended while loading: {_reason(proc, tail)}"
                    )
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    tail = proc.log_tail()
                    proc.stop(self.stop_grace_s)
                    last = tail[-1][:300] if tail else "no output"
                    raise TimedOut(
                        f"model server of {self.name} ({version}) was not ready after {self.ready_timeout_s:g} s "
                        f"and was stopped; last log line: {last}",
                        field="ready_timeout",
                    )
                time.sleep(0.25)

    def _gateway_command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "backend.serving.gateway",
            "--deployment",
            self.name,
            "--upstream-file",
            str(self.dir / "upstream.json"),
            "--keys-file",
            str(self.dir / "keys.json"),
            *(arg for spec in self.observers for arg in ("--observer", spec)),
        ]

    def _start_gateway(self, sock: socket.socket, restarts: int = 0, timeout_s: float = 60.0) -> None:
        fd = sock.fileno()
        env = child_env(
            {
                "PYTHONPATH": os.pathsep.join(filter(None, [_backend_root(), os.environ.get("PYTHONPATH")])),
                **self.observer_env,
            },
            drop_credentials=True,
        )
        self.gateway.start(
            [*self._gateway_command(), "--fd", str(fd)],
            env,
            cwd=self.dir,
            port=sock.getsockname()[1],
            pass_fds=(fd,),
            restarts=restarts,
        )
        host, real_port = sock.getsockname()[:2]
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.gateway.alive():
                tail = self.gateway.log_tail()
                raise LfopsError(f"gateway of {self.name} ended while starting: {_reason(self.gateway, tail)}")
            try:
                if httpx.get(f"http://{_connect_host(host)}:{real_port}/healthz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.gateway.stop(self.stop_grace_s)
                raise TimedOut(f"gateway of {self.name} did not answer /healthz within {timeout_s:g} s")
            time.sleep(0.1)

    # ---- keys, rollout ------------------------------------------------------------------------------------------

    def set_keys(self, keys: Iterable[StoredKey]) -> None:
        """Replace the accepted keys; the gateway picks the file up within a second, without a restart."""
        if self.state() is None:
            raise NotFound(f"deployment {self.name} is not running locally", field="name")
        write_keys_file(self.dir / "keys.json", keys)

    def rollout(self, spec: ModelServerSpec) -> LocalStatus:
        """Serve `spec` instead, with no failed request: start the new model server beside the old one, wait until
        it is ready, switch the gateway, let the requests on the old one finish, stop it."""
        spec.check()
        with self._locked():
            state = self.state()
            if state is None or state.get("desired") != "running":
                raise NotFound(f"deployment {self.name} is not running locally", field="name")
            old_gen = int(state["generation"])
            new_gen = old_gen + 1
            upstream_key = secrets.token_urlsafe(32)
            try:
                port = self._start_model_server(spec, new_gen, upstream_key)
            except BaseException:
                self.model_server(new_gen).stop(self.stop_grace_s)
                raise  # the old version keeps serving
            write_upstream_file(
                self.dir / "upstream.json",
                Upstream(f"http://{MODEL_SERVER_HOST}:{port}", spec.model_version, upstream_key),
            )
            _write_json(self.state_path, {**state, "generation": new_gen, "spec": asdict(spec)})
            self._wait_switched(state, spec.model_version)
            self.model_server(old_gen).stop(self.stop_grace_s)
            (self.dir / f"model-server-{old_gen}.yaml").unlink(missing_ok=True)
        return self.status()

    def _wait_switched(self, state: dict, version: str) -> None:
        """Until the gateway serves `version` and nothing runs on the previous model server (or the drain time-out)."""
        url = f"http://{_connect_host(state['host'])}:{state['port']}/readyz"
        deadline = time.monotonic() + self.drain_timeout_s
        while time.monotonic() < deadline:
            try:
                doc = httpx.get(url, timeout=2.0).json()
                if doc.get("model_version") == version and doc.get("draining") == 0:
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)

    # ---- stop, status -------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the gateway first (no new requests), then the model server; remove the state (logs stay)."""
        with self._locked():
            if self.state() is None:
                raise NotFound(f"deployment {self.name} is not running locally", field="name")
            _write_json(self.state_path, {**self.state(), "desired": "stopped"})
            self._stop_all()
            self._clear_state()

    def _stop_all(self) -> None:
        self.gateway.stop(self.stop_grace_s)
        for path in sorted(self.dir.glob("model-server-*.json")):
            generation = int(path.stem.rsplit("-", 1)[1])
            self.model_server(generation).stop(self.stop_grace_s)

    def _clear_state(self) -> None:
        for path in self.dir.iterdir():
            if path.suffix != ".log" and path.name != ".lock":
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def status(self) -> LocalStatus:
        state = self.state()
        if state is None or state.get("desired") != "running":
            return LocalStatus(self.name, "stopped", "", "", None, None, 0, 0)
        server = self.model_server(int(state["generation"]))
        srec, grec = server.record(), self.gateway.record()
        server_up, gateway_up = server.alive(), self.gateway.alive()
        if server_up and gateway_up:
            state_name = "running"
        else:
            state_name = "restarting"
        return LocalStatus(
            name=self.name,
            state=state_name,
            endpoint=f"http://{_connect_host(state['host'])}:{state['port']}/v1",
            model_version=state["spec"]["model_version"],
            model_server_pid=srec.pid if srec and server_up else None,
            gateway_pid=grec.pid if grec and gateway_up else None,
            model_server_restarts=srec.restarts if srec else 0,
            gateway_restarts=grec.restarts if grec else 0,
            reason="; ".join(v for v in self._reasons.values() if v),
        )

    # ---- supervision --------------------------------------------------------------------------------------------

    def supervise_once(self, now: float | None = None) -> list[str]:
        """Start again what ended on its own (with back-off); returns what was restarted. Never blocks on a lock."""
        now = time.monotonic() if now is None else now
        restarted: list[str] = []
        with self._locked(wait=False) as got:
            if not got:
                return restarted
            state = self.state()
            if state is None or state.get("desired") != "running":
                return restarted
            generation = int(state["generation"])
            server = self.model_server(generation)
            if not server.alive() and self._due("model-server", server.record(), now):
                self._restart_model_server(state, generation)
                restarted.append("model-server")
            if not self.gateway.alive() and self._due("gateway", self.gateway.record(), now):
                self._restart_gateway(state)
                restarted.append("gateway")
        return restarted

    def _due(self, what: str, record: ProcessRecord | None, now: float) -> bool:
        """The first restart is immediate; one that ends again soon waits 1, 2, 4 ... s (backend.serving.process)."""
        backoff = self._backoff[what]
        if not backoff.ready(now):
            return False
        backoff.failed(now, _age_s(record))
        return True

    def _restart_model_server(self, state: dict, generation: int) -> None:
        spec = ModelServerSpec(**state["spec"])
        upstream = json.loads((self.dir / "upstream.json").read_text())
        old = self.model_server(generation).record()
        port = old.port if old and _port_free(old.port) else free_port(MODEL_SERVER_HOST)
        try:
            self.model_server(generation).stop(0)  # whatever is left of the old process group
            self._launch_model_server(
                spec, generation, upstream["api_key"], port, restarts=(old.restarts + 1) if old else 1
            )
            if old is None or port != old.port:
                write_upstream_file(
                    self.dir / "upstream.json",
                    Upstream(f"http://{MODEL_SERVER_HOST}:{port}", spec.model_version, upstream["api_key"]),
                )
            self._reasons["model-server"] = ""
        except LfopsError as exc:
            self._reasons["model-server"] = str(exc)

    def _restart_gateway(self, state: dict) -> None:
        old = self.gateway.record()
        try:
            self.gateway.stop(0)
            sock = bind_socket(state["host"], int(state["port"]))
        except LfopsError as exc:
            self._reasons["gateway"] = str(exc)
            return
        try:
            self._start_gateway(sock, restarts=(old.restarts + 1) if old else 1)
            self._reasons["gateway"] = ""
        except LfopsError as exc:
            self._reasons["gateway"] = str(exc)
        finally:
            sock.close()


class _PortTaken(Exception):
    """The model server lost the race for its port (LLaMA-Factory binds it only after loading the model)."""


def _reason(proc: ManagedProcess, tail: list[str]) -> str:
    from backend.runners.lfprocess import failure_reason

    code = proc.exit_code()
    if code is None:
        errors = [ln for ln in tail if "Error" in ln or "Exception" in ln]
        last = (errors or tail or ["no output"])[-1]
        return last[:500]
    return failure_reason(proc.log_path, code)


def _age_s(record: ProcessRecord | None) -> float:
    if record is None or not record.create_time:
        return 0.0
    return max(0.0, time.time() - record.create_time)


def _port_free(port: int) -> bool:
    try:
        bind_socket(MODEL_SERVER_HOST, port).close()
        return True
    except LfopsError:
        return False


def _connect_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host` (0.0.0.0 means every address)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104 - compared, not bound


class LocalSupervisor:
    """A thread that keeps every deployment under `root` running (the app starts one; `advance()` is one pass)."""

    def __init__(self, root: Path, interval_s: float = 1.0, **deployment_options: Any) -> None:
        self.root = Path(root)
        self.interval_s = interval_s
        self._options = deployment_options
        self._deployments: dict[str, LocalDeployment] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def deployment(self, name: str) -> LocalDeployment:
        if name not in self._deployments:
            self._deployments[name] = LocalDeployment(self.root, name, **self._options)
        return self._deployments[name]

    def advance(self) -> dict[str, list[str]]:
        restarted = {}
        for state_path in sorted(self.root.glob("*/deployment.json")):
            try:
                done = self.deployment(state_path.parent.name).supervise_once()
            except (LfopsError, OSError, ValueError, KeyError):
                continue  # a deployment with broken state must not stop the others from being supervised
            if done:
                restarted[state_path.parent.name] = done
        return restarted

    def start(self) -> LocalSupervisor:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="lfops-serving-supervisor", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.advance()
