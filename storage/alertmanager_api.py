"""The `UpstreamSilencer` port on Alertmanager's API v2 (`/api/v2/silences`), over aiohttp.

Each call opens its own short-lived session with a timeout: silences are set by people,
a few a day, and nothing is left open between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from engine.alerting.silences import UpstreamFailed, UpstreamSilence


class AlertmanagerSilences:
    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def create(
        self, labels: Mapping[str, str], starts_at: float, ends_at: float, author: str, comment: str
    ) -> str:
        body = {
            "matchers": [
                {"name": name, "value": value, "isRegex": False, "isEqual": True}
                for name, value in sorted(labels.items())
            ],
            "startsAt": _iso(starts_at),
            "endsAt": _iso(ends_at),
            "createdBy": author,
            "comment": comment,
        }
        answer = await self._call("POST", "/api/v2/silences", body)
        if not isinstance(answer, Mapping) or not answer.get("silenceID"):
            raise UpstreamFailed(f"Alertmanager answered without a silence id: {str(answer)[:200]}")
        return str(answer["silenceID"])

    async def expire(self, silence_id: str) -> None:
        await self._call("DELETE", f"/api/v2/silence/{silence_id}")

    async def active(self) -> list[UpstreamSilence]:
        answer = await self._call("GET", "/api/v2/silences", params={"silenced": "false"})
        found = []
        for item in answer if isinstance(answer, list) else []:
            if (item.get("status") or {}).get("state") != "active":
                continue
            matchers = " ".join(_matcher(m) for m in item.get("matchers") or [])
            ends = datetime.fromisoformat(str(item["endsAt"]).replace("Z", "+00:00")).timestamp()
            found.append(
                UpstreamSilence(
                    str(item["id"]),
                    matchers,
                    ends,
                    str(item.get("createdBy", "")),
                    str(item.get("comment", "")),
                )
            )
        return sorted(found, key=lambda s: s.ends_at)

    async def _call(
        self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None
    ) -> Any:
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session:
                async with session.request(method, self.url + path, json=body, params=params) as response:
                    text = await response.text()
                    if response.status >= 400:
                        raise UpstreamFailed(f"Alertmanager answered {response.status}: {text.strip()[:200]}")
                    return await response.json(content_type=None) if text.strip() else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamFailed(
                f"Alertmanager at {self.url} did not answer: {exc or type(exc).__name__}"
            ) from exc
        except ValueError as exc:  # not JSON: not Alertmanager's API at that URL
            raise UpstreamFailed(f"{self.url}{path} did not answer as Alertmanager's API v2: {exc}") from exc


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _matcher(m: Mapping[str, Any]) -> str:
    op = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}
    return f'{m.get("name")}{op[(bool(m.get("isRegex")), bool(m.get("isEqual", True)))]}"{m.get("value")}"'
