"""Sending one notification: a signed JSON webhook, or a message through apprise (chat, e-mail). Each returns what
happened, never raises for a target's failure: the dispatcher records it and retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

SIGNATURE_HEADER = "X-Lfops-Signature"
TIMESTAMP_HEADER = "X-Lfops-Timestamp"
EVENT_HEADER = "X-Lfops-Event"
DELIVERY_HEADER = "X-Lfops-Delivery"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None = None  # HTTP status, when there was an answer
    error: str = ""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>." + body): the timestamp is signed too, so a receiver
    that refuses old timestamps refuses replays."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signed: str, tolerance_s: float = 300) -> bool:
    """What a receiver checks (documented in docs/notifications.md): the signature, and a recent timestamp."""
    try:
        fresh = abs(time.time() - int(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(signature(secret, timestamp, body), signed)


def send_webhook(url: str, secret: str, payload: dict[str, Any], timeout_s: float) -> Outcome:
    import httpx

    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "lfops-notifications",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        EVENT_HEADER: payload["kind"],
        DELIVERY_HEADER: str(payload["delivery"]),
    }
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout_s, follow_redirects=False)
    except httpx.TimeoutException:
        return Outcome(False, None, f"timed out after {timeout_s:g} s")
    except httpx.HTTPError as exc:
        return Outcome(False, None, f"{type(exc).__name__}: {str(exc)[:200]}")
    if response.is_success:
        return Outcome(True, response.status_code)
    return Outcome(False, response.status_code, f"HTTP {response.status_code}: {response.text[:200]}")


def send_apprise(url: str, title: str, body: str) -> Outcome:
    import apprise

    sender = apprise.Apprise()
    if not sender.add(url):
        return Outcome(False, None, "apprise: the URL is not one apprise knows")
    with apprise.LogCapture(level=apprise.logging.WARNING) as log:
        ok = sender.notify(title=title, body=body)
        errors = log.getvalue().strip().splitlines()
    # never the URL (it holds the service's token): apprise's own last line, which names the service
    return (
        Outcome(True) if ok else Outcome(False, None, "apprise: " + (errors[-1][:200] if errors else "not delivered"))
    )


def apprise_url_is_valid(url: str) -> bool:
    import apprise

    return bool(apprise.Apprise().add(url))
