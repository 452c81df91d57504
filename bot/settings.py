"""All of SigOps' settings, in one pydantic-settings class (env prefix `SIGOPS_`).

Built once at start-up by the CLI (`load_settings`) and passed down; nothing reads the
environment at import time. `.env.example` documents every field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from engine.errors import ConfigError


def _split_csv(raw: Any) -> Any:
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


class PromQueryConfig(BaseModel):
    """One PromQL query to poll: `{"name": "checkout.rps", "query": "sum(rate(...))"}`."""

    name: str = Field(min_length=1, max_length=150)
    query: str = Field(min_length=1)
    step_s: float = Field(default=60.0, ge=1.0)
    service: str | None = None


class ProbeConfig(BaseModel):
    """One URL to probe: `{"name": "checkout.health", "url": "http://checkout/healthz"}`."""

    name: str = Field(min_length=1, max_length=150)
    url: str = Field(pattern=r"^https?://")
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    expect_status: int = Field(default=200, ge=100, le=599)
    service: str | None = None


class Settings(BaseSettings):
    """Every knob, with the defaults the embedded demo runs on."""

    # env_ignore_empty: `SIGOPS_X=` (as `.env.example` has it) means unset, not an empty value.
    model_config = SettingsConfigDict(
        env_prefix="SIGOPS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,
    )

    # Storage
    redis_url: str | None = Field(default=None, description="Redis URL; unset = in-process stand-in")
    # The record on PostgreSQL (postgresql://user@host:5432/sigops), shared by several nodes;
    # unset: SQLite in SIGOPS_DATA_DIR.
    database_url: SecretStr | None = None
    database_pool_size: int = Field(default=10, ge=1, le=100)
    # Braces make every key share one hash slot (`{sigops}`), as a Redis Cluster needs.
    redis_prefix: str = Field(default="sigops", pattern=r"^[A-Za-z0-9_.:{}-]{1,64}$")
    # Redis managed by Sentinel: the sentinels (host:port, comma-separated) and the master's
    # name, instead of SIGOPS_REDIS_URL; a failover needs no change here.
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_sentinel_master: str = "mymaster"
    redis_db: int = Field(default=0, ge=0, le=15)
    redis_password: SecretStr | None = None
    # Acknowledge signals only once this many replicas have them (WAIT): nothing acknowledged
    # is lost when the master dies. 0: as soon as the master has them.
    redis_min_replicas: int = Field(default=0, ge=0, le=5)
    data_dir: Path = Path("./data")
    stream_maxlen: int = Field(default=100_000, ge=100)  # stream entries of ≤100 signals each

    # HTTP ingest
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    ingest_token: SecretStr | None = None
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_batch: int = Field(default=5_000, ge=1, le=100_000)

    # Workers and detection
    workers: int = Field(default=1, ge=0, le=32)
    shards: int = Field(default=8, ge=1, le=1024)  # the stream's shards, each read by one worker
    lease_ms: int = Field(default=10_000, ge=300)  # a dead worker's shards move after this
    worker_batch: int = Field(default=20, ge=1, le=1_000)  # stream entries (≤100 signals each) per read
    reclaim_idle_ms: int = Field(default=30_000, ge=100)
    detect_warmup: int = Field(default=30, ge=2)
    detect_open_score: float = Field(default=0.58, gt=0, lt=1)
    detect_keep_score: float = Field(default=0.3, gt=0, lt=1)
    detect_quiet_points: int = Field(default=10, ge=1)

    # Pull sources (JSON lists; see .env.example)
    prometheus_url: str | None = None
    prometheus_queries: list[PromQueryConfig] = Field(default_factory=list)
    probes: list[ProbeConfig] = Field(default_factory=list)
    pull_interval_s: float = Field(default=60.0, ge=1.0)

    # Question answering
    ollama_host: str | None = None
    ollama_model: str = "llama3.2"
    embed_model: str | None = None  # an Ollama embedding model, e.g. nomic-embed-text; unset = built-in
    # Defaults for a CPU-only Ollama with a small model: the prompt takes a while to read.
    ollama_first_token_s: float = Field(default=30.0, gt=0, le=600)  # until the first word
    ollama_timeout_s: float = Field(default=90.0, gt=0, le=600)  # a whole answer, streamed
    ollama_num_predict: int = Field(default=300, ge=16, le=4096)  # tokens an answer may take

    # Telegram
    telegram_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"  # or a self-hosted Bot API server
    telegram_chat_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)

    # Slack
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_channels: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Who may do what from chat: {"telegram:123456": "admin", "slack:U0123": "responder", "slack:*": "viewer"}
    roles: dict[str, str] = Field(default_factory=dict)
    default_role: str = Field(default="viewer", pattern=r"^(viewer|responder|admin)$")
    telegram_webhook_url: str | None = None  # set: webhook mode at this public URL; unset: long polling
    telegram_webhook_secret: SecretStr | None = None  # checked on every webhook call (Telegram's header)
    telegram_poll_interval_s: float = Field(default=0.0, ge=0, le=60)

    # Morning brief (per-destination times can be set in the routing file's `briefs`)
    brief_at: str = Field(default="08:00", pattern=r"^([01]?\d|2[0-3]):[0-5]\d$")
    brief_weekdays_only: bool = False
    briefs_enabled: bool = True

    # Alert pipeline
    routing_file: Path | None = None  # YAML: receivers, routes, inhibit rules; unset = every chat gets all
    callback_secret: SecretStr | None = None  # signs alert buttons; unset = made once in data_dir
    dispatch_interval_s: float = Field(default=1.0, gt=0, le=60)  # alert pipeline tick
    chat_timeout_s: float = Field(default=10.0, gt=0, le=120)  # each Telegram/Slack API call
    # Alert labels in messages: those that tell a group's alerts apart are shown; these never,
    # and these first (the rest by name).
    alert_labels_hidden: Annotated[list[str], NoDecode] = Field(default_factory=list)
    alert_labels_first: Annotated[list[str], NoDecode] = Field(default_factory=list)

    timezone: str = "UTC"
    log_level: str = Field(default="INFO", pattern=r"^(?i:debug|info|warning|error)$")

    retention_days: int = Field(default=14, ge=1)

    # Alertmanager's URL (http://alertmanager:9093): silencing one of its alerts from chat also
    # silences it there (API v2), and `silences` lists its own.
    alertmanager_url: str | None = None

    # Dead-man's switch: the always-firing alert (Alertmanager's Watchdog) whose silence for
    # longer than the timeout is itself a critical alert. Empty name: no switch.
    watchdog_alertname: str = "Watchdog"
    watchdog_timeout_s: float = Field(default=600, ge=60)

    @field_validator(
        "telegram_chat_ids",
        "slack_channels",
        "alert_labels_hidden",
        "alert_labels_first",
        "redis_sentinels",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, raw: Any) -> Any:
        return _split_csv(raw)

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, roles: dict[str, str]) -> dict[str, str]:
        for who, role in roles.items():
            if role not in ("viewer", "responder", "admin"):
                raise ValueError(f"{who}: unknown role {role!r} (viewer, responder or admin)")
            if ":" not in who:
                raise ValueError(f"{who!r}: write platform:user_id, e.g. telegram:123456 or slack:U0123")
        return roles

    @field_validator("callback_secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value().encode()) < 16:
            raise ValueError("needs at least 16 characters (e.g. `openssl rand -hex 32`), or leave it unset")
        return secret

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") from None
        return name

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (unset: SQLite in SIGOPS_DATA_DIR)")
        return url

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, values: list[str]) -> list[str]:
        for value in values:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{value!r} is not host:port (e.g. sentinel-1:26379)")
        return values

    @property
    def redis_configured(self) -> bool:
        return bool(self.redis_url or self.redis_sentinels)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url or None

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "sigops.db"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def missing(self) -> list[str]:
        """What the embedded default runs without, each with how to add it."""
        notes = []
        if not self.redis_url and not self.redis_sentinels:
            notes.append(
                "no Redis: using an in-process stand-in (data lost at exit); "
                "set SIGOPS_REDIS_URL=redis://host:6379/0"
            )
        if not self.ollama_host:
            notes.append("no Ollama: answers are retrieval-only; set SIGOPS_OLLAMA_HOST=http://host:11434")
        if not self.telegram_token:
            notes.append(
                "no Telegram: set SIGOPS_TELEGRAM_TOKEN and SIGOPS_TELEGRAM_CHAT_IDS to get alerts there"
            )
        if not self.slack_bot_token:
            notes.append(
                "no Slack: set SIGOPS_SLACK_BOT_TOKEN, SIGOPS_SLACK_SIGNING_SECRET and "
                "SIGOPS_SLACK_CHANNELS to get alerts there"
            )
        return notes


def _where(part: str | int) -> str:
    """A nested location in a JSON setting: `[0]` for list items, `.query` for fields."""
    return f"[{part}]" if isinstance(part, int) else f".{part}"


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and `.env`); a bad value names the variable."""
    try:
        return Settings(**overrides)
    except SettingsError as exc:  # a list setting that is not valid JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"SIGOPS_{field.group(1).upper()}" if field else "a SIGOPS_ setting"
        raise ConfigError(f"bad settings:\n  {name}: not valid JSON (it takes a JSON list)") from None
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            loc = error["loc"]
            name = "SIGOPS_" + str(loc[0]).upper() + "".join(_where(p) for p in loc[1:])
            message = str(error["msg"]).removeprefix("Value error, ")
            given = error.get("input")
            shown = (
                f" (got {given!r})"
                if isinstance(given, str | int | float) and "TOKEN" not in name and "SECRET" not in name
                else ""
            )
            lines.append(f"{name}: {message}{shown}")
        raise ConfigError("bad settings:\n  " + "\n  ".join(lines)) from None
