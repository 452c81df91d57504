"""Who may talk to SigOps, and with which role: allow-listed chats, a role per user."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Access:
    """Chats served per platform, and the role map (`platform:user_id` → role, `platform:*` default)."""

    chats: Mapping[str, Collection[str]]
    roles: Mapping[str, str] = field(default_factory=dict)
    default_role: str = "viewer"

    def role_of(self, platform: str, user_id: str) -> str:
        return self.roles.get(f"{platform}:{user_id}") or self.roles.get(f"{platform}:*") or self.default_role

    def chat_allowed(self, platform: str, chat_id: str, user_id: str, private: bool) -> bool:
        """An allow-listed chat; or a direct chat with someone the role map names."""
        if chat_id in self.chats.get(platform, ()):
            return True
        return private and f"{platform}:{user_id}" in self.roles
