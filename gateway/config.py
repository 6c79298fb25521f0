"""Typed settings from ``KANJIA_*`` environment variables and an optional TOML file.

The variable names are a contract with deployment scripts (ARCHITECTURE.md). A TOML file
(``KANJIA_CONFIG_FILE`` or ``kanjia --config``) may set the same keys, in lower case
without the prefix (``mqtt_url = "mqtt://..."``); the environment wins over the file.
Unknown keys, in the file or as ``KANJIA_*`` variables, are refused with a message naming
them, so a misspelt setting never passes silently. ``KANJIA_TEST_*`` is left to the test
suite. Defaults are the embedded ones: SQLite and a filesystem store under ``./var/``.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "KANJIA_"
_NOT_SETTINGS = ("KANJIA_TEST_", "KANJIA_CONFIG_FILE")

#: How devices authenticate to the broker (issue 13): the broker's dynamic-security plugin
#: managed by the gateway, a broker that calls the gateway's HTTP hooks, or no
#: authentication at all (the demo's embedded broker on loopback).
MqttAuth = Literal["mosquitto-dynsec", "http-hooks", "none"]
MQTT_AUTH_CHOICES: Final[tuple[MqttAuth, ...]] = ("mosquitto-dynsec", "http-hooks", "none")


class ConfigError(ValueError):
    """Settings that cannot start the service; the message says which key and why."""


def _var_dir() -> Path:
    return Path.cwd() / "var"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, case_sensitive=False
    )

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    #: CA certificate(s) (PEM) that the broker of an ``mqtts://`` URL is verified against;
    #: empty: the system's trusted CAs.
    mqtt_ca_file: str = ""
    mqtt_client_id: str = "kanjia-gateway"
    #: Shared-subscription group for scale-out (``$share/<group>/...``); empty: plain.
    mqtt_shared_group: str = ""
    #: How devices authenticate to the broker; ``kanjia serve`` refuses to start unset.
    mqtt_auth: MqttAuth | None = None
    #: Bearer token of ``/broker/v1/*`` (the broker's HTTP hooks); empty: the hooks are off.
    broker_hook_token: str = ""
    #: Seconds a gateway's hooks use what they read of a device's credentials: a change
    #: made through another gateway process reaches this one's hooks within it (0: none kept).
    broker_hook_cache_seconds: float = Field(default=5.0, ge=0)
    #: HMAC key of device passwords' stored hashes; empty: derived from the platform token.
    credential_key: str = ""
    database_url: str = Field(default_factory=lambda: f"sqlite:///{_var_dir() / 'kanjia.db'}")
    object_store_url: str = Field(default_factory=lambda: (_var_dir() / "objects").as_uri())
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    public_url: str = ""
    platform_token: str = ""
    platform_callback_url: str = ""
    plans_file: str = ""
    clock: str = "wall"
    #: A device silent for longer than this is offline even without a Will.
    presence_timeout_seconds: float = Field(default=90.0, gt=0)
    #: Lifetime of presigned download (playback) URLs.
    url_ttl_seconds: int = Field(default=300, gt=0)
    #: Lifetime of the presigned PUT URL of an ``upload/res``: short, since whoever reads
    #: the answer holds it (issue 13). Service-clock seconds on the filesystem store,
    #: wall-clock seconds on S3 (the store checks its own signatures).
    upload_url_ttl_seconds: int = Field(default=60, gt=0)
    app_token_ttl_days: int = Field(default=30, gt=0, le=3650)
    #: Largest device payload handled; a larger one is refused as malformed (issue 14).
    max_payload_bytes: int = Field(default=256 * 1024, gt=0)
    #: Upload requests one device may make a minute (a camera catching up on a day of
    #: 10-s segments sends 8,640: at the default it takes 7 minutes).
    upload_requests_per_minute: int = Field(default=1200, gt=0)
    #: HMAC key of the filesystem store's presigned URLs; shared by scaled-out gateways.
    url_signing_key: str = ""
    #: R14: how much a family cloud holds (bytes).
    family_cloud_quota_bytes: int = Field(default=10 * 1024**3, gt=0)
    #: Years a closed month's charge lines are kept in the ledger (issue 17).
    ledger_retention_years: int = Field(default=7, gt=0, le=100)
    log_level: str = "INFO"

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "tcp", "mqtts") or not parts.hostname:
            raise ValueError(
                "must look like mqtt://host:port or mqtts://host:port (TLS), "
                "optionally with user:password@"
            )
        return value

    @field_validator("mqtt_ca_file")
    @classmethod
    def _mqtt_ca_file(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        if urlsplit(str(info.data.get("mqtt_url", ""))).scheme != "mqtts":
            raise ValueError("is set but KANJIA_MQTT_URL is not mqtts://")
        if not Path(value).is_file():
            raise ValueError(f"no such file {value!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+", "postgres:")):
            raise ValueError("must be sqlite:///path or postgresql://...")
        return value

    @field_validator("object_store_url")
    @classmethod
    def _object_store_url(cls, value: str) -> str:
        if not value.startswith(("file://", "s3://")):
            raise ValueError("must be file:///path or s3://bucket?endpoint=...")
        return value

    @field_validator("clock")
    @classmethod
    def _clock(cls, value: str) -> str:
        from devices.clock import parse_clock

        parse_clock(value)
        return value

    @property
    def base_url(self) -> str:
        """Where clients reach this gateway (``KANJIA_PUBLIC_URL`` or host and port)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::", "") else self.http_host
        return f"http://{host}:{self.http_port}"


def derived_key(settings: Settings, explicit: str, purpose: bytes) -> bytes:
    """A secret key: ``explicit`` when the operator set one, else one derived for
    ``purpose`` from the platform token (or the database URL), stable across restarts."""
    if explicit:
        return explicit.encode()
    seed = settings.platform_token or settings.database_url
    return hmac.new(seed.encode(), purpose, hashlib.sha256).digest()


def require_for_serve(settings: Settings) -> None:
    """What ``kanjia serve`` needs beyond the defaults, so no deployment is open by accident."""
    if not settings.platform_token:
        raise ConfigError("KANJIA_PLATFORM_TOKEN must be set for kanjia serve")
    if settings.mqtt_auth is None:
        raise ConfigError(
            "KANJIA_MQTT_AUTH must be set for kanjia serve: one of "
            + ", ".join(MQTT_AUTH_CHOICES)
            + " (none leaves the broker open to any client)"
        )
    if settings.mqtt_auth == "http-hooks" and not settings.broker_hook_token:
        raise ConfigError("KANJIA_MQTT_AUTH=http-hooks needs KANJIA_BROKER_HOOK_TOKEN")


def _known_keys() -> set[str]:
    return set(Settings.model_fields)


def _unknown(keys: list[str], where: str, *, env: bool) -> ConfigError:
    known = sorted(_known_keys())
    hints = []
    for key in keys:
        name = key[len(ENV_PREFIX) :].lower() if env else key
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            hint = f"{ENV_PREFIX}{close[0].upper()}" if env else close[0]
            hints.append(f"{key} (did you mean {hint}?)")
        else:
            hints.append(key)
    return ConfigError(f"unknown setting(s) in {where}: {', '.join(hints)}")


def load_settings(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from the file, then the environment, then explicit ``overrides``."""
    env = os.environ if environ is None else environ
    if config_file is None and env.get("KANJIA_CONFIG_FILE"):
        config_file = Path(env["KANJIA_CONFIG_FILE"])
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        bad = [k for k in data if k not in _known_keys()]
        if bad:
            raise _unknown(bad, str(config_file), env=False)
        values.update(data)
    env_keys = [
        k for k in env if k.upper().startswith(ENV_PREFIX) and not k.startswith(_NOT_SETTINGS)
    ]
    bad_env = [k for k in env_keys if k[len(ENV_PREFIX) :].lower() not in _known_keys()]
    if bad_env:
        raise _unknown(bad_env, "the environment", env=True)
    for key in env_keys:
        values[key[len(ENV_PREFIX) :].lower()] = env[key]
    values.update(overrides or {})
    try:
        # Values are passed explicitly, so pydantic-settings reads no other source.
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
