"""Secrets of notification targets (a webhook's signing key, an apprise URL with its token) sealed for the database.

A webhook's key must be read back to sign, so it cannot be hashed: it is encrypted (Fernet: AES-128-CBC with
HMAC-SHA256) with the key in the settings (LFOPS_NOTIFY_KEY, e.g. from the secrets directory), or, when none is set,
with a key file lfops makes once in the workspace (mode 0600). The database alone opens nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from backend.errors import LfopsError, SettingsError
from backend.settings import Settings

KEY_FILE = "notify.key"


class Sealer:
    def __init__(self, settings: Settings) -> None:
        from cryptography.fernet import Fernet

        key = settings.notify_key.strip() or _key_file(settings.workspace / KEY_FILE)
        try:
            self._fernet = Fernet(key.encode())
        except ValueError:
            raise SettingsError(
                "LFOPS_NOTIFY_KEY: must be a Fernet key (32 url-safe base64-encoded bytes; "
                "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')",
                field="LFOPS_NOTIFY_KEY",
            ) from None

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str, what: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise LfopsError(
                f"{what}: its secret was sealed with another notify key (LFOPS_NOTIFY_KEY changed?)"
            ) from None


def _key_file(path: Path) -> str:
    """The workspace's key, made on first use (created exclusively: two processes agree on one key)."""
    from cryptography.fernet import Fernet

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(Fernet.generate_key().decode())
    for _ in range(50):  # another process may be between creating the file and writing it
        key = path.read_text().strip()
        if key:
            return key
        import time

        time.sleep(0.02)
    raise SettingsError(f"LFOPS_NOTIFY_KEY: the key file {path} is empty", field="LFOPS_NOTIFY_KEY")
