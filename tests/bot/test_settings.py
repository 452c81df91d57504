"""Settings: the documented example loads, and bad values name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import Settings, load_settings
from engine.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_documented_example_is_valid_and_covers_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("SIGOPS_"):
            monkeypatch.delenv(key)
    example = (ROOT / ".env.example").read_text()
    settings = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    for name in Settings.model_fields:
        assert f"SIGOPS_{name.upper()}" in example, f"SIGOPS_{name.upper()} is not documented"


def test_json_lists_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGOPS_PROBES", '[{"name": "a.health", "url": "http://a/healthz"}]')
    monkeypatch.setenv("SIGOPS_TELEGRAM_CHAT_IDS", "-1001, 42")
    settings = load_settings()
    assert settings.probes[0].url == "http://a/healthz" and settings.probes[0].timeout_s == 5.0
    assert settings.telegram_chat_ids == [-1001, 42]


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("SIGOPS_PROBES", '[{"name": "a", "url": "ftp://x"}]', "SIGOPS_PROBES"),
        ("SIGOPS_PROMETHEUS_QUERIES", "not json", "SIGOPS_PROMETHEUS_QUERIES"),
        ("SIGOPS_REDIS_URL", "http://x", "must start with redis://"),
        ("SIGOPS_DETECT_OPEN_SCORE", "2", "SIGOPS_DETECT_OPEN_SCORE"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=fragment):
        load_settings()


def test_empty_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGOPS_ROUTING_FILE", "")
    monkeypatch.setenv("SIGOPS_CALLBACK_SECRET", "")
    monkeypatch.setenv("SIGOPS_HTTP_PORT", "")
    settings = load_settings()
    assert settings.routing_file is None and settings.callback_secret is None and settings.http_port == 8080


def test_a_bad_json_setting_names_the_item_and_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGOPS_PROMETHEUS_QUERIES", '[{"name": "checkout.rps"}]')
    with pytest.raises(ConfigError, match=r"SIGOPS_PROMETHEUS_QUERIES\[0\]\.query: Field required"):
        load_settings()


def test_compose_keeps_the_record_in_its_volume_whatever_env_says() -> None:
    """Compose's `environment` wins over `env_file`: the data dir and port are pinned there."""
    import yaml

    sigops = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["sigops"]
    mounts = {v.split(":")[1] for v in sigops["volumes"]}
    assert sigops["environment"]["SIGOPS_DATA_DIR"] in mounts
    published = {p.split(":")[1] for p in sigops["ports"]}
    assert sigops["environment"]["SIGOPS_HTTP_PORT"] in published
