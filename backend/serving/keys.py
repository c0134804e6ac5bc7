"""API keys of a deployment: random, shown once, kept only as sha256 hashes, checked in constant time.

A key reads `lfk_<id>_<secret>`: the id (8 hex digits) names the key in listings, audit events and request samples
so that it can be revoked; the secret is 32 random bytes. Keys are high-entropy random strings, so a plain sha256
is enough (no password hash: nothing to brute-force) and lets the gateway check a key in microseconds.

The gateway reads the hashes from a keys file (JSON, written atomically with mode 0600) and re-reads it when it
changes, so keys are added and revoked without a restart. The key itself is never stored, logged or returned again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from backend.errors import LfopsError

KEY_PREFIX = "lfk_"
_KEY_RE = re.compile(r"^lfk_(?P<id>[0-9a-f]{8})_[A-Za-z0-9_-]{43}$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
KEYS_FORMAT = "lfops-gateway-keys/1"


@dataclass(frozen=True)
class StoredKey:
    """What is kept of a key: its public id and the sha256 of the whole key."""

    key_id: str
    sha256: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> tuple[str, StoredKey]:
    """A fresh key (to show once) and what to store of it."""
    key_id = secrets.token_hex(4)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return key, StoredKey(key_id, hash_key(key))


def key_id_of(key: str) -> str:
    """The public id of a well-formed key, "" otherwise (safe to log)."""
    m = _KEY_RE.match(key)
    return m.group("id") if m else ""


class KeyRing:
    """The keys one deployment accepts."""

    def __init__(self, keys: Iterable[StoredKey] = ()) -> None:
        self._keys = tuple((k.key_id, bytes.fromhex(k.sha256)) for k in keys)

    def __len__(self) -> int:
        return len(self._keys)

    def match(self, presented: str) -> str | None:
        """The id of the key that `presented` is, or None. Every stored hash is compared, with compare_digest,
        whatever matched: the time taken says nothing about which key (if any) was close."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for key_id, stored in self._keys:
            if hmac.compare_digest(digest, stored):
                found = key_id
        return found


def write_keys_file(path: Path, keys: Iterable[StoredKey]) -> None:
    """Atomically, readable by the owner only (the hashes are not secrets, but nobody else needs them)."""
    doc = {"format": KEYS_FORMAT, "keys": [{"id": k.key_id, "sha256": k.sha256} for k in keys]}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=1)
    os.replace(tmp, path)


def read_keys_file(path: Path) -> list[StoredKey]:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise LfopsError(f"keys file: {path} does not exist", field="keys_file") from None
    except ValueError as exc:
        raise LfopsError(f"keys file: {path} is not valid JSON ({exc})", field="keys_file") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise LfopsError(f'keys file: {path} must hold {{"keys": [{{"id", "sha256"}}]}}', field="keys_file")
    keys = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not _HASH_RE.match(str(entry.get("sha256", ""))):
            raise LfopsError(f"keys file: entry {i} of {path} has no valid sha256", field="keys_file")
        keys.append(StoredKey(str(entry.get("id", "")), entry["sha256"]))
    return keys
