"""Signed button data: a button's command, with a MAC so a forged or altered press is refused.

Telegram keeps callback data to 64 bytes; `action|mac` with an 8-byte MAC fits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from engine.errors import SigOpsError

MAX_CALLBACK_BYTES = 64


class ForgedCallback(SigOpsError):
    """Button data that SigOps did not sign (or that was changed)."""


class CallbackSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the callback secret needs at least 16 bytes")
        self._secret = secret

    def sign(self, action: str) -> str:
        data = f"{action}|{self._mac(action)}"
        if len(data.encode()) > MAX_CALLBACK_BYTES:
            raise ValueError(f"button action too long for a callback: {action!r}")
        return data

    def verify(self, data: str) -> str:
        """The action inside signed button data; ForgedCallback when the MAC does not match."""
        action, _, mac = data.rpartition("|")
        if not action or not hmac.compare_digest(mac, self._mac(action)):
            raise ForgedCallback("this button was not made by SigOps (or was changed)")
        return action

    def _mac(self, action: str) -> str:
        digest = hmac.new(self._secret, action.encode(), hashlib.sha256).digest()[:8]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def load_or_create_secret(path: Path) -> bytes:
    """The installation's callback secret, made once and kept in the data directory."""
    try:
        secret = path.read_bytes().strip()
        if len(secret) >= 16:
            return secret
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    path.write_bytes(secret)
    path.chmod(0o600)
    return secret
