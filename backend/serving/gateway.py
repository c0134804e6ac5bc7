"""The serving gateway: an ASGI app in front of one deployment's model server (LLaMA-Factory's API or vLLM).

    client --Bearer lfk_...--> gateway --(its own upstream key)--> model server on 127.0.0.1 or in the same pod

- OpenAI routes pass through unchanged (`GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`):
  bodies are forwarded as bytes (never re-serialised), streams (SSE) chunk by chunk as they arrive. One pooled
  httpx.AsyncClient per gateway; `Accept-Encoding: identity` upstream so that what passes through can be read.
- Authentication: `Authorization: Bearer <key>` checked against the deployment's key hashes (backend.serving.keys);
  refused with 401 in OpenAI's error format. The key is never forwarded, logged or given to an observer.
- `/healthz` (the gateway runs), `/readyz` (the upstream answers /v1/models: model loaded; it also tells the model
  version and how many requests still run on a previous upstream), `/metrics` (backend.serving.metrics).
- Rollouts: `switch(upstream)` (or a changed upstream file, polled) sends new requests to the new model server
  while the ones in flight finish on the old one; `/readyz` shows `draining: 0` when the old one may be stopped.
- Observers (backend.serving.observers) see every finished request off the request path.

Run it as its own process (what lfops does, locally and as the Kubernetes sidecar):
    python -m backend.serving.gateway --deployment NAME --model-version REF --upstream URL --keys-file FILE ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from backend.errors import LfopsError
from backend.serving.keys import KeyRing, read_keys_file
from backend.serving.metrics import GatewayMetrics
from backend.serving.observers import ObserverDispatcher, RequestObserver, RequestRecord

log = logging.getLogger(__name__)

OPENAI_ROUTES = {
    "/v1/models": ("GET",),
    "/v1/chat/completions": ("POST",),
    "/v1/completions": ("POST",),
}
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Request headers never sent upstream: the caller's key, and what httpx sets itself.
_DROP_REQUEST = _HOP_BY_HOP | {"host", "authorization", "content-length", "accept-encoding", "cookie"}
# Response headers uvicorn/Starlette write themselves.
_DROP_RESPONSE = _HOP_BY_HOP | {"content-length", "date", "server"}
_MAX_SSE_LINE = 1 << 20
READY_TIMEOUT_S = 2.0
# Idle upstream connections are dropped before the model server drops them: uvicorn (LLaMA-Factory's API, vLLM)
# closes them after 5 s, httpx's default is also 5 s, and a request sent on a connection the server is closing at that
# moment fails (RemoteProtocolError: a 502 to the client). With 16 pools an idle time near 5 s is common.
UPSTREAM_KEEPALIVE_S = 2.0


@dataclass(eq=False)
class Upstream:
    """One model server; requests count themselves in and out so a retired upstream can be drained."""

    url: str
    model_version: str
    api_key: str = field(default="", repr=False)  # the model server's own key (local servers); never logged
    in_flight: int = 0

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise LfopsError(f"upstream: {self.url!r} must be an http:// or https:// URL", field="upstream")


@dataclass(frozen=True)
class GatewayConfig:
    deployment: str
    upstream: Upstream
    keys_file: Path | None = None  # JSON of key hashes, re-read when it changes (None: keys given in code only)
    upstream_file: Path | None = None  # JSON {url, model_version, api_key}, re-read when it changes (rollouts)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 600.0  # between two chunks from upstream: long CPU generations are slow
    max_body_bytes: int = 8 << 20
    max_connections: int = 512  # to upstream, over all client shards
    client_shards: int = 16
    reload_interval_s: float = 0.5


def read_upstream_file(path: Path) -> Upstream:
    try:
        doc = json.loads(Path(path).read_text())
        return Upstream(str(doc["url"]), str(doc["model_version"]), str(doc.get("api_key", "")))
    except FileNotFoundError:
        raise LfopsError(f"upstream file: {path} does not exist", field="upstream_file") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise LfopsError(f"upstream file: {path} needs url and model_version ({exc})", field="upstream_file") from None


def write_upstream_file(path: Path, upstream: Upstream) -> None:
    """Atomic and owner-only: it holds the model server's key."""
    doc = {"url": upstream.url, "model_version": upstream.model_version, "api_key": upstream.api_key}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)


def _error(status: int, message: str, kind: str, code: str) -> JSONResponse:
    """OpenAI's error shape, so the official clients raise their usual exceptions."""
    return JSONResponse({"error": {"message": message, "type": kind, "code": code, "param": None}}, status)


class _Request:
    """Book-keeping of one proxied request; `finish` runs exactly once, whatever path the request took."""

    __slots__ = ("gateway", "upstream", "route", "key_id", "started", "started_wall", "observers", "body", "done")

    def __init__(
        self,
        gateway: Gateway,
        upstream: Upstream,
        route: str,
        key_id: str,
        body: bytes,
        observers: tuple[RequestObserver, ...],
    ) -> None:
        self.gateway, self.upstream, self.route, self.key_id = gateway, upstream, route, key_id
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.observers = observers
        self.body = body if observers else b""  # kept only for observers, until the request ends
        self.done = False
        upstream.in_flight += 1
        gateway.metrics.started(upstream.model_version)

    def finish(
        self,
        status: int,
        *,
        stream: bool = False,
        ttft: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        response_chars: int = 0,
        error: str = "",
    ) -> None:
        if self.done:
            return
        self.done = True
        latency = time.perf_counter() - self.started
        version = self.upstream.model_version
        self.upstream.in_flight -= 1
        self.gateway.metrics.finished(version, self.route, status, latency, ttft, prompt_tokens, completion_tokens)
        if self.observers:
            record = RequestRecord(
                deployment=self.gateway.config.deployment,
                model_version=version,
                route=self.route,
                status=status,
                stream=stream,
                started_at=self.started_wall,
                latency_s=latency,
                ttft_s=ttft,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                response_chars=response_chars,
                key_id=self.key_id,
                error=error,
            )
            self.gateway.dispatcher.submit(self.observers, record, self.body)


class _StreamStats:
    """Reads an SSE stream as it passes: time of the first content chunk, content chunks and characters, and
    `usage` when upstream sends it (vLLM with stream_options.include_usage)."""

    __slots__ = ("pending", "first_content", "chunks", "chars", "prompt_tokens", "completion_tokens")

    def __init__(self) -> None:
        self.pending = b""
        self.first_content: float | None = None
        self.chunks = 0
        self.chars = 0
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None

    def feed(self, data: bytes) -> None:
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        if len(self.pending) > _MAX_SSE_LINE:  # not SSE as we know it: stop reading, keep relaying
            self.pending = b""
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if not payload or payload == b"[DONE]":
                continue
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(doc, dict):
                continue
            usage = doc.get("usage")
            if isinstance(usage, dict):
                self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
                self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)
            for choice in doc.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if isinstance(text, str) and text:
                    if self.first_content is None:
                        self.first_content = time.perf_counter()
                    self.chunks += 1
                    self.chars += len(text)


class _Relay:
    """The streamed answer: upstream chunks sent on as they come; the upstream response is closed and the request
    recorded however it ends (done, upstream broke, client went away)."""

    def __init__(self, resp: httpx.Response, req: _Request, headers: list[tuple[bytes, bytes]]) -> None:
        self.resp, self.req, self.headers = resp, req, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = _StreamStats()
        error = ""
        relayed = anyio.Event()
        try:
            await send({"type": "http.response.start", "status": self.resp.status_code, "headers": self.headers})
            async with anyio.create_task_group() as tg:

                async def relay() -> None:
                    nonlocal error
                    try:
                        async for chunk in self.resp.aiter_raw():
                            stats.feed(chunk)
                            await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    except httpx.HTTPError as exc:
                        error = f"stream_broken: {type(exc).__name__}"
                        self.req.gateway.metrics.upstream_error(self.req.upstream.model_version, "stream_broken")
                    relayed.set()  # before the last send: the server reports a disconnect once the response is done
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    tg.cancel_scope.cancel()

                async def watch_disconnect() -> None:
                    nonlocal error
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    if not error and not relayed.is_set():
                        error = "client_disconnected"
                    tg.cancel_scope.cancel()

                tg.start_soon(relay)
                tg.start_soon(watch_disconnect)
        finally:
            with anyio.CancelScope(shield=True):
                await self.resp.aclose()
            completion = stats.completion_tokens if stats.completion_tokens is not None else stats.chunks
            ttft = None if stats.first_content is None else stats.first_content - self.req.started
            self.req.finish(
                self.resp.status_code,
                stream=True,
                ttft=ttft,
                prompt_tokens=stats.prompt_tokens,
                completion_tokens=completion,
                response_chars=stats.chars,
                error=error,
            )


def _usage(content: bytes) -> tuple[int | None, int | None, int]:
    """(prompt tokens, completion tokens, response characters) of a non-streamed OpenAI answer."""
    try:
        doc = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None, None, 0
    if not isinstance(doc, dict):
        return None, None, 0
    usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else {}
    chars = 0
    for choice in doc.get("choices") or ():
        if isinstance(choice, dict):
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else choice.get("text")
            chars += len(text) if isinstance(text, str) else 0
    return usage.get("prompt_tokens"), usage.get("completion_tokens"), chars


class Gateway:
    """The gateway of one deployment; `.app` is the ASGI application."""

    def __init__(
        self,
        config: GatewayConfig,
        keys: KeyRing | None = None,
        observers: Sequence[RequestObserver] = (),
    ) -> None:
        self.config = config
        self.metrics = GatewayMetrics(config.deployment)
        self.dispatcher = ObserverDispatcher(observers, on_drop=self.metrics.observer_drop)
        for observer in observers:  # an observer with counters of its own shows them on /metrics (sampling's drops)
            register = getattr(observer, "register_metrics", None)
            if register is not None:
                register(self.metrics.registry)
        self.upstream = config.upstream
        self._retired: list[Upstream] = []
        self.keys = keys if keys is not None else KeyRing()
        self._file_stamps: dict[Path, tuple[int, int, int]] = {}
        if config.keys_file is not None:
            self.keys = KeyRing(read_keys_file(config.keys_file))
            self._file_stamps[config.keys_file] = _stamp(config.keys_file)
        if config.upstream_file is not None and config.upstream_file.exists():
            self.upstream = read_upstream_file(config.upstream_file)
            self._file_stamps[config.upstream_file] = _stamp(config.upstream_file)
        self.clients: list[httpx.AsyncClient] = []
        self._next_client = itertools.count()
        routes = [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            *(Route(path, self.proxy, methods=list(methods)) for path, methods in OPENAI_ROUTES.items()),
        ]
        self.app = Starlette(routes=routes, lifespan=self._lifespan)

    # ---- life ---------------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        c = self.config
        # Several small pools instead of one large one: httpcore's pool scans every connection for every queued
        # request (encode/httpx#3215), so its CPU cost per request grows with the pool. 16 pools cut the gateway's
        # CPU per request about 6x at 64 concurrent requests (bench/gateway.py); one TLS context serves them all.
        shards = max(1, c.client_shards)
        per_shard = max(1, -(-c.max_connections // shards))
        tls = httpx.create_ssl_context()
        self.clients = [
            httpx.AsyncClient(
                verify=tls,
                timeout=httpx.Timeout(connect=c.connect_timeout_s, read=c.read_timeout_s, write=60.0, pool=30.0),
                limits=httpx.Limits(
                    max_connections=per_shard,
                    max_keepalive_connections=per_shard,
                    keepalive_expiry=UPSTREAM_KEEPALIVE_S,
                ),
            )
            for _ in range(shards)
        ]
        self.dispatcher.start()
        reload_task = asyncio.create_task(self._reload_loop()) if self._file_stamps or c.upstream_file else None
        try:
            yield
        finally:
            if reload_task is not None:
                reload_task.cancel()
            for client in self.clients:
                await client.aclose()
            await asyncio.to_thread(self.dispatcher.stop)

    def switch(self, upstream: Upstream) -> None:
        """New requests go to `upstream`; requests in flight finish where they started."""
        if upstream is self.upstream:
            return
        self._retired.append(self.upstream)
        self.upstream = upstream

    @property
    def draining(self) -> int:
        """Requests still running on upstreams that were switched away from."""
        self._retired = [u for u in self._retired if u.in_flight > 0]
        return sum(u.in_flight for u in self._retired)

    def reload_files(self) -> None:
        """Pick up a changed keys file or upstream file; a bad file keeps the previous state (and is logged)."""
        c = self.config
        for path in (c.keys_file, c.upstream_file):
            if path is None:
                continue
            try:
                stamp = _stamp(path)
            except FileNotFoundError:
                continue
            if self._file_stamps.get(path) == stamp:
                continue
            try:
                if path == c.keys_file:
                    self.keys = KeyRing(read_keys_file(path))
                else:
                    new = read_upstream_file(path)
                    if (new.url, new.model_version, new.api_key) != (
                        self.upstream.url,
                        self.upstream.model_version,
                        self.upstream.api_key,
                    ):
                        self.switch(new)
                self._file_stamps[path] = stamp
            except LfopsError as exc:
                log.warning("gateway %s: keeping the previous state: %s", c.deployment, exc)

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval_s)
            self.reload_files()

    # ---- routes -------------------------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        upstream = self.upstream
        state = {"model_version": upstream.model_version, "draining": self.draining}
        try:
            resp = await self.clients[0].get(
                upstream.url + "/v1/models", headers=self._upstream_auth(upstream), timeout=READY_TIMEOUT_S
            )
            loaded = resp.status_code == 200 and isinstance(resp.json().get("data"), list)
            reason = "" if loaded else f"upstream /v1/models answered {resp.status_code}"
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            loaded, reason = False, f"upstream not answering ({type(exc).__name__})"
        if loaded:
            return JSONResponse({"ready": True, **state})
        return JSONResponse({"ready": False, "reason": reason, **state}, 503)

    async def metrics_endpoint(self, request: Request) -> Response:
        body, content_type = self.metrics.exposition()
        return Response(body, headers={"content-type": content_type})

    def _authenticate(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return None
        return self.keys.match(presented.strip())

    @staticmethod
    def _upstream_auth(upstream: Upstream) -> dict[str, str]:
        return {"authorization": f"Bearer {upstream.api_key}"} if upstream.api_key else {}

    async def proxy(self, request: Request) -> Response | _Relay:
        route = request.url.path
        key_id = self._authenticate(request)
        if key_id is None:
            self.metrics.auth_failure()
            self.metrics.refused(self.upstream.model_version, route, 401)
            return _error(
                401, "Invalid or missing API key for this deployment.", "invalid_request_error", "invalid_api_key"
            )
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        body = b"" if declared.isdigit() and int(declared) > limit else await request.body()
        if len(body) > limit or (declared.isdigit() and int(declared) > limit):
            self.metrics.refused(self.upstream.model_version, route, 413)
            return _error(413, f"Request body over {limit} bytes.", "invalid_request_error", "request_too_large")
        upstream = self.upstream  # this request stays on it even if a rollout switches meanwhile
        observers = self.dispatcher.wanting(route) if self.dispatcher else ()
        req = _Request(self, upstream, route, key_id, body, observers)
        try:
            headers = [(k, v) for k, v in request.headers.items() if k not in _DROP_REQUEST]
            headers.append(("accept-encoding", "identity"))
            headers.extend(self._upstream_auth(upstream).items())
            client = self.clients[next(self._next_client) % len(self.clients)]
            upstream_request = client.build_request(request.method, upstream.url + route, content=body, headers=headers)
            resp = await client.send(upstream_request, stream=True)
        except httpx.TimeoutException as exc:
            self.metrics.upstream_error(upstream.model_version, "timeout")
            req.finish(504, error=f"upstream_timeout: {type(exc).__name__}")
            return _error(504, "The model server did not answer in time.", "server_error", "upstream_timeout")
        except httpx.HTTPError as exc:
            self.metrics.upstream_error(upstream.model_version, "unreachable")
            req.finish(502, error=f"upstream_unreachable: {type(exc).__name__}")
            return _error(502, "The model server is not reachable.", "server_error", "upstream_unreachable")
        except BaseException:
            req.finish(499, error="cancelled")
            raise
        response_headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in resp.headers.multi_items()
            if k.lower() not in _DROP_RESPONSE
        ]
        if resp.headers.get("content-type", "").startswith("text/event-stream"):
            return _Relay(resp, req, response_headers)
        try:
            content = await resp.aread()
        except httpx.HTTPError as exc:
            self.metrics.upstream_error(upstream.model_version, "unreachable")
            req.finish(502, error=f"upstream_broken: {type(exc).__name__}")
            return _error(502, "The model server broke off its answer.", "server_error", "upstream_unreachable")
        except BaseException:
            req.finish(499, error="cancelled")
            raise
        finally:
            await resp.aclose()
        prompt_tokens = completion_tokens = None
        chars = 0
        if resp.status_code == 200 and route != "/v1/models":
            prompt_tokens, completion_tokens, chars = _usage(content)
        req.finish(
            resp.status_code, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, response_chars=chars
        )
        return _RawResponse(content, resp.status_code, response_headers)


class _RawResponse(Response):
    """Upstream's body and headers as they came (Starlette adds content-length)."""

    def __init__(self, content: bytes, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.body = content
        self.background = None
        self.raw_headers = [*raw_headers, (b"content-length", str(len(content)).encode())]


def _stamp(path: Path) -> tuple[int, int, int]:
    """What changes when a file is replaced (atomic rename, Kubernetes' Secret volume symlink swap) or edited."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


def create_app(
    config: GatewayConfig, keys: KeyRing | None = None, observers: Sequence[RequestObserver] = ()
) -> Starlette:
    return Gateway(config, keys, observers).app


# ---- the gateway process --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backend.serving.gateway", description=__doc__.split("\n")[0])
    p.add_argument("--deployment", required=True)
    p.add_argument("--model-version", default="", help="label of the upstream's model (NAME:vN)")
    p.add_argument("--upstream", default="", help="model server URL (or give --upstream-file)")
    p.add_argument("--upstream-file", type=Path, help="JSON {url, model_version, api_key}, re-read when it changes")
    p.add_argument("--keys-file", type=Path, required=True, help="JSON of API key hashes, re-read when it changes")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--fd", type=int, help="serve on this inherited, already listening socket instead")
    p.add_argument("--read-timeout", type=float, default=600.0)
    p.add_argument(
        "--observer",
        action="append",
        default=[],
        metavar="MODULE:FACTORY",
        help="a request observer: FACTORY(deployment) returns a RequestObserver (repeatable)",
    )
    return p


def load_observer(spec: str, deployment: str) -> RequestObserver:
    """`package.module:factory` -> factory(deployment); how request sampling is plugged into the gateway process."""
    import importlib

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LfopsError(f"observer: {spec!r} must be MODULE:FACTORY", field="observer")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise LfopsError(f"observer: cannot load {spec} ({exc})", field="observer") from None
    observer = factory(deployment)
    if not isinstance(observer, RequestObserver):
        raise LfopsError(f"observer: {spec} did not return an object with wants() and observe()", field="observer")
    return observer


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.upstream_file is not None and args.upstream_file.exists():
            upstream = read_upstream_file(args.upstream_file)
        elif args.upstream:
            upstream = Upstream(args.upstream, args.model_version)
        else:
            raise LfopsError("upstream: give --upstream or an existing --upstream-file", field="upstream")
        config = GatewayConfig(
            deployment=args.deployment,
            upstream=upstream,
            keys_file=args.keys_file,
            upstream_file=args.upstream_file,
            read_timeout_s=args.read_timeout,
        )
        observers = [load_observer(spec, args.deployment) for spec in args.observer]
        app = Gateway(config, observers=observers).app
        if args.fd is None:
            from backend.serving.httpserver import bind_socket

            sock = bind_socket(args.host, args.port)
        else:
            sock = socket.socket(fileno=args.fd)  # family detected from the socket (uvicorn's fd= assumes AF_UNIX)
    except LfopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # One worker: the gateway's own state (metrics, key ring, upstream) lives in this process; scale with replicas.
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=30, server_header=False
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
