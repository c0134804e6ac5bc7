"""Where request sampling (monitoring, issue 11) hooks into the gateway, without slowing or failing a request.

An observer has two methods:

- `wants(route)`: called on the request path, before the request goes upstream, for every request. It must be
  cheap and decide alone (e.g. `random() < rate`, or False while sampling is off for the deployment). Only when at
  least one observer wants a request does the gateway keep its body.
- `observe(record)`: called later on the dispatcher's own thread with a `RequestRecord` (prompt text, status,
  latency, time to first token, tokens, response length). It may be slow (write to a database); it never runs on
  the request path.

Both are guarded: an exception is counted (`lfops_gateway_observer_errors_total`) and otherwise ignored. Records
wait in a bounded queue (count and bytes); when it is full the record is dropped and counted, never waited for.
The prompt is extracted on the dispatcher thread, capped at `max_prompt_chars`, and never includes headers: an
observer cannot see the caller's API key (the record carries only its public id). Redacting secrets in prompt text
is the observer's job (issue 11 stores redacted prompts).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)
# Request sampling (backend.monitoring.sampler): the observer the gateway process loads, and where it finds the
# metadata store. Named here so that serving's manifests and local processes refer to it without importing it.
SAMPLING_OBSERVER = "backend.monitoring.sampler:for_deployment"
SAMPLING_DATABASE_VARIABLE = "LFOPS_SAMPLING_DATABASE_URL"
MAX_PROMPT_CHARS = 16_384
MAX_QUEUED = 1024
MAX_QUEUED_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One finished request as an observer sees it."""

    deployment: str
    model_version: str
    route: str  # "/v1/chat/completions", "/v1/completions", "/v1/models"
    status: int  # the HTTP status the client got (200 also for a stream that broke half-way; see `error`)
    stream: bool
    started_at: float  # epoch seconds
    latency_s: float  # until the last byte was sent
    ttft_s: float | None  # streams: until the first content chunk
    prompt_tokens: int | None  # from upstream `usage`; None when upstream did not say (streams)
    completion_tokens: int | None  # `usage`, or the number of content chunks of a stream
    response_chars: int
    key_id: str  # the public id of the caller's key, never the key
    error: str = ""  # why the gateway failed the request or cut the stream ("" when it did not)
    prompt: str = ""  # the prompt text, filled in on the dispatcher thread (capped)
    prompt_chars: int = 0  # the prompt's full length before the cap
    prompt_truncated: bool = False


@runtime_checkable
class RequestObserver(Protocol):
    def wants(self, route: str) -> bool:
        """Decide on the request path, cheaply, whether to observe this request."""

    def observe(self, record: RequestRecord) -> None:
        """Receive the record on the dispatcher thread (may block, may be slow)."""


def prompt_text(route: str, body: bytes, max_chars: int = MAX_PROMPT_CHARS) -> tuple[str, int]:
    """The prompt of an OpenAI request body, capped: chat messages joined as `role: text` lines, or `prompt`.

    Returns (text, full length). A body that is not JSON (or not text) gives ("", 0): nothing is guessed.
    """
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "", 0
    if not isinstance(doc, dict):
        return "", 0
    parts: list[str] = []
    if route.endswith("/chat/completions"):
        for message in doc.get("messages") or []:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, list):  # multimodal: only the text items
                content = "".join(i.get("text", "") for i in content if isinstance(i, dict) and i.get("type") == "text")
            if isinstance(content, str):
                parts.append(f"{message.get('role', '')}: {content}")
    else:
        prompt = doc.get("prompt")
        if isinstance(prompt, list):
            parts.extend(p for p in prompt if isinstance(p, str))
        elif isinstance(prompt, str):
            parts.append(prompt)
    text = "\n".join(parts)
    return text[:max_chars], len(text)


class ObserverDispatcher:
    """Hands finished requests to observers on one background thread."""

    def __init__(
        self,
        observers: Sequence[RequestObserver],
        on_drop: Callable[[str], None] = lambda reason: None,
        max_queued: int = MAX_QUEUED,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        max_prompt_chars: int = MAX_PROMPT_CHARS,
    ) -> None:
        self.observers = tuple(observers)
        self._on_drop = on_drop  # metrics: reason "queue_full" | "wants_error" | "observe_error"
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queued)
        self._max_bytes = max_queued_bytes
        self._queued_bytes = 0
        self._bytes_lock = threading.Lock()
        self._max_prompt_chars = max_prompt_chars
        self._thread: threading.Thread | None = None

    def __bool__(self) -> bool:
        return bool(self.observers)

    def start(self) -> None:
        if self.observers and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lfops-gateway-observers", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (within `timeout`), then end the thread."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None
        for observer in self.observers:  # an observer with a writer of its own flushes it (sampling)
            close = getattr(observer, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - shutting down: one observer's failure must not stop the rest
                    log.debug("observer close failed", exc_info=True)

    def wanting(self, route: str) -> tuple[RequestObserver, ...]:
        """The observers that want this request (request path: guarded, no allocation when nobody wants it)."""
        chosen: tuple[RequestObserver, ...] = ()
        for observer in self.observers:
            try:
                if observer.wants(route):
                    chosen += (observer,)
            except Exception:  # noqa: BLE001 - an observer must never fail a request
                self._on_drop("wants_error")
        return chosen

    def submit(self, observers: tuple[RequestObserver, ...], record: RequestRecord, body: bytes) -> None:
        """Queue a record for `observers`; never blocks: a full queue drops it (and counts the drop)."""
        size = len(body)
        with self._bytes_lock:
            if self._queued_bytes + size > self._max_bytes:
                self._on_drop("queue_full")
                return
            self._queued_bytes += size
        try:
            self._queue.put_nowait((observers, record, body))
        except queue.Full:
            with self._bytes_lock:
                self._queued_bytes -= size
            self._on_drop("queue_full")

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            observers, record, body = item
            with self._bytes_lock:
                self._queued_bytes -= len(body)
            try:
                text, full = prompt_text(record.route, body, self._max_prompt_chars)
                record = replace(record, prompt=text, prompt_chars=full, prompt_truncated=full > len(text))
            except Exception:  # noqa: BLE001 - a strange body must not end the thread
                log.debug("prompt extraction failed", exc_info=True)
            for observer in observers:
                try:
                    observer.observe(record)
                except Exception:  # noqa: BLE001 - one observer's failure is counted, the others still run
                    self._on_drop("observe_error")
