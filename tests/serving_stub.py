"""A minimal OpenAI-compatible model server (raw ASGI, no framework) for gateway tests and the gateway benchmark.

It answers like LLaMA-Factory's API: `/v1/models`, `/v1/chat/completions` (JSON with `usage`, or SSE chunks ending
in `[DONE]`) and `/v1/completions`. It remembers the Authorization header of the last request, and can be told to
wait before answering (`delay_s`) or between stream chunks (`chunk_delay_s`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

MODELS = b'{"object":"list","data":[{"id":"stub","object":"model","created":0,"owned_by":"owner"}]}'


@dataclass
class StubModelServer:
    name: str = "stub"
    api_key: str = ""  # when set, requests without `Bearer <api_key>` get 401 (as LLaMA-Factory's API_KEY does)
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    chunks: int = 4
    seen_authorization: list[str] = field(default_factory=list)
    requests: int = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.requests += 1
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization", b"").decode()
        if len(self.seen_authorization) < 1000:
            self.seen_authorization.append(auth)
        if self.api_key and auth != f"Bearer {self.api_key}":
            return await _json(send, 401, b'{"detail":"Invalid API key."}')
        path = scope["path"]
        if path == "/v1/models":
            return await _json(send, 200, MODELS)
        if path not in ("/v1/chat/completions", "/v1/completions") or scope["method"] != "POST":
            return await _json(send, 404, b'{"detail":"Not Found"}')
        try:
            request = json.loads(body)
        except ValueError:
            return await _json(send, 422, b'{"detail":"not JSON"}')
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        chat = path == "/v1/chat/completions"
        if request.get("stream"):
            return await self._stream(send, chat)
        text = " ".join(["tok"] * self.chunks)
        choice = {"index": 0, "finish_reason": "stop"}
        choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
        answer = {
            "id": "cmpl-stub",
            "object": "chat.completion" if chat else "text_completion",
            "model": request.get("model", self.name),
            "choices": [choice],
            "usage": {"prompt_tokens": 7, "completion_tokens": self.chunks, "total_tokens": 7 + self.chunks},
        }
        await _json(send, 200, json.dumps(answer).encode())

    async def _stream(self, send: Any, chat: bool) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")],
            }
        )

        def event(content: str | None, finish: str | None = None) -> bytes:
            if chat:
                delta = {"role": "assistant", "content": ""} if content is None else {"content": content}
                choice = {"index": 0, "delta": delta if finish is None else {}, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": content or "", "finish_reason": finish}
            return b"data: " + json.dumps({"id": "cmpl-stub", "choices": [choice]}).encode() + b"\n\n"

        await send({"type": "http.response.body", "body": event(None), "more_body": True})
        for i in range(self.chunks):
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            await send({"type": "http.response.body", "body": event(f"tok{i} "), "more_body": True})
        await send({"type": "http.response.body", "body": event(None, "stop"), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _json(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class JsonLinesObserver:
    """A request observer for the gateway process (`--observer tests.serving_stub:jsonl_observer`): every request
    as one JSON line in the file named by LFOPS_TEST_OBSERVER_FILE."""

    def __init__(self, deployment: str, path: str) -> None:
        self.deployment, self.path = deployment, path

    def wants(self, route: str) -> bool:
        return True

    def observe(self, record: Any) -> None:
        import dataclasses

        with open(self.path, "a") as fh:
            fh.write(json.dumps(dataclasses.asdict(record)) + "\n")


def jsonl_observer(deployment: str) -> JsonLinesObserver:
    import os

    return JsonLinesObserver(deployment, os.environ["LFOPS_TEST_OBSERVER_FILE"])
