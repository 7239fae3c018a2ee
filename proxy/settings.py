"""Every setting once: its flag, its environment variable, its default and its check.

The README's configuration table lists the same rows; ``python -m proxy --help`` prints them.
An invalid value stops the start with a message naming the setting.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_UPSTREAM = "https://app.smsleads.co.il/api"
STORES = ("sqlite", "memory", "redis")  # docs/upstream-protocol.md#transport


class SettingsError(ValueError):
    """A setting has a value the proxy cannot start with."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number, 0-65535")
    return value


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return text


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _redis_url(text: str) -> str:
    if text and urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL, or empty")
    return text


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def _readable_file(text: str) -> str:
    """A file the proxy can read now (a mounted secret); its content is read by auth.py."""
    try:
        with Path(text).open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"must be a readable file ({exc.strerror})") from exc
    return text


def _store(text: str) -> str:
    kind = text.strip().lower()
    if kind not in STORES:
        raise ValueError(f"must be one of {', '.join(STORES)}")
    return kind


def default_state_dir() -> str:
    """$XDG_STATE_HOME/smsleads-proxy (the XDG Base Directory spec's place for state)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "smsleads-proxy")


# ── Webhooks (proxy/events/, issue 13) ──────────────────────────────────────────────────────


def _delays(text: str) -> str:
    """Seconds between a webhook's attempts: ``5,300,1800``."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise ValueError("must be seconds between attempts, comma-separated") from exc
    if not values or any(not value >= 0 for value in values):
        raise ValueError("must be seconds between attempts (0 or more), comma-separated")
    return ",".join(str(value).removesuffix(".0") for value in values)


def _networks(text: str) -> str:
    try:
        for part in text.split(","):
            if part.strip():
                ipaddress.ip_network(part.strip(), strict=False)
    except ValueError as exc:
        raise ValueError("must be networks (CIDR) or addresses, comma-separated") from exc
    return text.strip()


def _token_keys(text: str) -> str:
    from proxy.events.sealing import Sealer, SealError

    try:
        Sealer.from_setting(text)
    except SealError as exc:
        raise ValueError(f"must be {exc}: comma-separated, the first seals") from exc
    return text.strip()
# ── The spend guard (proxy/guard.py) ──────────────────────────────────────────────────────


def rate(text: str) -> int | None:
    """A rate limit: a positive integer, or ``none`` for no limit."""
    if text.strip().lower() == "none":
        return None
    return _positive_int(text)


def budget(text: str) -> int | None:
    """A credit budget: an integer from 0 (nothing may be spent), or ``none`` for no budget."""
    if text.strip().lower() == "none":
        return None
    return _count(text)


# ─────────────────────────────────────────────────────────────────────────────────────────


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError("must be one of debug, info, warning, error")
    return level


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    upstream_url: str = DEFAULT_UPSTREAM
    upstream_timeout: float = 30.0
    upstream_connect_timeout: float = 5.0
    # The largest legitimate request, 1,000 messages of 1,005 Hebrew letters written as
    # \uXXXX escapes (Python's json.dumps default) and 10,000 recipients, is about 7 MB.
    max_body_bytes: int = 8 * 1024 * 1024
    max_answer_bytes: int = 8 * 1024 * 1024
    # HTTP limits (proxy/server.py): Node's and h11's default header size
    max_header_bytes: int = 16 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000
    sandbox: bool = False
    log_level: str = "info"
    readiness_window: float = 30.0
    readiness_timeout: float = 5.0
    # Single-tenant mode (auth.py): the proxy holds the account, clients hold proxy API keys.
    # repr=False keeps secrets out of tracebacks and debug output.
    username: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    api_keys: str | None = field(default=None, repr=False)
    api_keys_file: str | None = None
    store: str | None = None  # sqlite, or redis when redis_url is set
    state_dir: str | None = None  # default_state_dir()
    redis_url: str | None = None
    redis_volatile_ok: bool = False
    idempotency_max_keys: int = 1_000_000
    idempotency_keys_per_credential: int = 100_000
    read_retries: int = 2
    breaker_failures: int = 5
    breaker_cooldown: float = 10.0
    # Webhooks (proxy/events/, issue 13).
    webhook_poll_interval: float = 5.0
    webhook_lease: float = 15.0
    webhook_timeout: float = 15.0
    # Svix's schedule: at once, then after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (~28 h).
    webhook_retries: str = "5,300,1800,7200,18000,36000,36000"
    webhook_disable_after: float = 5 * 24 * 3600.0
    webhook_secret_grace: float = 24 * 3600.0
    webhook_low_credits: int = 100
    webhook_allow_networks: str | None = None
    webhook_token_keys: str | None = field(default=None, repr=False)

    # The spend guard (proxy/guard.py), per credential; None: no limit. An honest client
    # meets neither rate: 50 sends a second, and 60,000 recipients a minute is six of the
    # largest sends the proxy takes (10,000 recipients).
    requests_per_second: int | None = 50
    recipients_per_minute: int | None = 60_000
    daily_credits: int | None = None
    hourly_credits: int | None = None

    @property
    def webhook_delays(self) -> tuple[float, ...]:
        return tuple(float(part) for part in self.webhook_retries.split(","))

    @property
    def store_kind(self) -> str:
        return self.store or ("redis" if self.redis_url else "sqlite")

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir or default_state_dir())

    def check(self) -> Settings:
        """The settings that cannot be judged one by one."""
        if self.store_kind == "redis" and not self.redis_url:
            raise SettingsError(f"{named('store')}=redis needs {named('redis_url')}")
        if self.store_kind != "redis" and self.redis_url:
            raise SettingsError(f"{named('redis_url')} is set but {named('store')} is "
                                f"{self.store_kind}: leave one out")
        return self


@dataclass(frozen=True, slots=True)
class Option:
    field: str
    env: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False  # its value is never repeated in a message

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("host", "SMSLEADS_PROXY_HOST", str, "address to listen on"),
    Option("port", "SMSLEADS_PROXY_PORT", _port, "port to listen on"),
    Option("workers", "SMSLEADS_PROXY_WORKERS", _positive_int, "worker processes"),
    Option("upstream_url", "SMSLEADS_API_URL", _url, "the SMS Leads XML API endpoint"),
    Option("upstream_timeout", "SMSLEADS_UPSTREAM_TIMEOUT", _positive_float,
           "seconds to wait for an upstream answer"),
    Option("upstream_connect_timeout", "SMSLEADS_UPSTREAM_CONNECT_TIMEOUT", _positive_float,
           "seconds to wait for an upstream connection"),
    Option("max_body_bytes", "SMSLEADS_MAX_BODY_BYTES", _positive_int,
           "largest request body accepted (413 above)"),
    Option("max_answer_bytes", "SMSLEADS_MAX_ANSWER_BYTES", _positive_int,
           "largest upstream answer read (502 above)"),
    Option("max_header_bytes", "SMSLEADS_MAX_HEADER_BYTES", _positive_int,
           "largest request line and headers accepted (431 above)"),
    Option("header_timeout", "SMSLEADS_HEADER_TIMEOUT", _positive_float,
           "seconds a client has to send a request's headers (408 and closed after)"),
    Option("body_timeout", "SMSLEADS_BODY_TIMEOUT", _positive_float,
           "seconds a request's body may take to arrive after its headers (408 beyond)"),
    Option("max_connections", "SMSLEADS_MAX_CONNECTIONS", _positive_int,
           "connections each worker holds; beyond, the longest idle one is closed, or 503 "
           "`server-busy` when all are busy"),
    Option("sandbox", "SMSLEADS_SANDBOX", _flag,
           "answer from the embedded sandbox instead of SMS Leads"),
    Option("log_level", "SMSLEADS_LOG_LEVEL", _log_level, "debug, info, warning or error"),
    Option("readiness_window", "SMSLEADS_READINESS_WINDOW", _positive_float,
           "seconds an upstream answer keeps `/readyz` ready; older, `/readyz` probes"),
    Option("readiness_timeout", "SMSLEADS_READINESS_TIMEOUT", _positive_float,
           "seconds `/readyz` waits for its probe's answer"),
    Option("username", "SMSLEADS_USERNAME", _text,
           "single-tenant: the SMS Leads username the proxy uses for every client"),
    Option("token", "SMSLEADS_TOKEN", _text,
           "single-tenant: the SMS Leads API token (prefer the variable or `--token-file`: "
           "a flag shows in the process list)", secret=True),
    Option("token_file", "SMSLEADS_TOKEN_FILE", _readable_file,
           "single-tenant: a file holding the API token (a Docker or Kubernetes secret)"),
    Option("api_keys", "SMSLEADS_PROXY_API_KEYS", _text,
           "single-tenant: the proxy's API keys, comma-separated, each a key or `sha256:<hex>`",
           secret=True),
    Option("api_keys_file", "SMSLEADS_PROXY_API_KEYS_FILE", _readable_file,
           "single-tenant: a file of API keys, one a line (`#` comments)"),
    Option("store", "SMSLEADS_STORE", _store,
           "where shared state lives: `sqlite` (a file in `--state-dir`, every worker of "
           "this host), `redis` (`--redis-url`, several hosts) or `memory` (this process "
           "only, lost at restart); unset: `redis` with a Redis URL, else `sqlite`"),
    Option("state_dir", "SMSLEADS_STATE_DIR", _text,
           "the directory of the SQLite state file (unset: `$XDG_STATE_HOME/smsleads-proxy`, "
           "by default `~/.local/state/smsleads-proxy`)"),
    Option("redis_url", "REDIS_URL", _redis_url,
           "Redis shared by every process on every host (`redis://`, `rediss://`, `unix://`)"),
    Option("redis_volatile_ok", "SMSLEADS_REDIS_VOLATILE_OK", _flag,
           "accept a Redis without the append-only file or with evictions (a restart or a "
           "full Redis then forgets Idempotency-Keys)"),
    Option("idempotency_max_keys", "SMSLEADS_IDEMPOTENCY_MAX_KEYS", _positive_int,
           "Idempotency-Keys kept in all; new keys get 503 beyond"),
    Option("idempotency_keys_per_credential", "SMSLEADS_IDEMPOTENCY_KEYS_PER_CREDENTIAL",
           _positive_int, "Idempotency-Keys one credential may hold at once; its new keys "
           "get 503 beyond"),
    Option("read_retries", "SMSLEADS_READ_RETRIES", _count,
           "extra tries of a read (GET) when no connection to the upstream could be made"),
    Option("breaker_failures", "SMSLEADS_BREAKER_FAILURES", _positive_int,
           "upstream failures in a row that open the circuit breaker (503 at once)"),
    Option("breaker_cooldown", "SMSLEADS_BREAKER_COOLDOWN", _positive_float,
           "seconds the breaker stays open before one probe call"),
    # Webhooks (proxy/events/, issue 13).
    Option("webhook_poll_interval", "SMSLEADS_WEBHOOK_POLL_INTERVAL", _positive_float,
           "seconds between two reads of a subscribed account's reports (and credits)"),
    Option("webhook_lease", "SMSLEADS_WEBHOOK_LEASE", _positive_float,
           "seconds a process holds an account's poller without renewing it; a dead "
           "process's poller is taken over after this"),
    Option("webhook_timeout", "SMSLEADS_WEBHOOK_TIMEOUT", _positive_float,
           "seconds a receiver has to answer a webhook with a 2xx"),
    Option("webhook_retries", "SMSLEADS_WEBHOOK_RETRIES", _delays,
           "seconds before each retry of a failed webhook (jittered by up to a fifth), "
           "comma-separated; after the last, the delivery has failed"),
    Option("webhook_disable_after", "SMSLEADS_WEBHOOK_DISABLE_AFTER", _positive_float,
           "seconds an endpoint may keep failing every delivery before its subscription is "
           "disabled"),
    Option("webhook_secret_grace", "SMSLEADS_WEBHOOK_SECRET_GRACE", _positive_float,
           "seconds a rotated signing secret keeps signing beside the new one"),
    Option("webhook_low_credits", "SMSLEADS_WEBHOOK_LOW_CREDITS", _count,
           "`account.balance_low` when the credits fall below this"),
    Option("webhook_allow_networks", "SMSLEADS_WEBHOOK_ALLOW_NETWORKS", _networks,
           "networks webhooks may reach although not public, comma-separated CIDRs "
           "(`127.0.0.0/8` for a receiver on this host); unset: public addresses only"),
    Option("webhook_token_keys", "SMSLEADS_WEBHOOK_TOKEN_KEYS", _token_keys,
           "multi-tenant: AES-256 keys (base64 of 32 bytes, comma-separated, the first seals) "
           "that keep clients' tokens sealed for their webhooks; unset: no subscription "
           "without single-tenant mode", secret=True),
    # The spend guard (proxy/guard.py); single-tenant keys may have their own (README).
    Option("requests_per_second", "SMSLEADS_REQUESTS_PER_SECOND", rate,
           "requests that change state (sends, cancels, list changes) each credential may make "
           "per second; beyond, 429 with `Retry-After`; `none`: no limit"),
    Option("recipients_per_minute", "SMSLEADS_RECIPIENTS_PER_MINUTE", rate,
           "recipients each credential may send to per minute, counted as the price preview "
           "counts them; beyond, 429 with `Retry-After`; `none`: no limit"),
    Option("daily_credits", "SMSLEADS_DAILY_CREDITS", budget,
           "credits each credential may spend a day (from midnight, Israel time); a send that "
           "would cross it gets 429 and is not sent; unset or `none`: no budget"),
    Option("hourly_credits", "SMSLEADS_HOURLY_CREDITS", budget,
           "credits each credential may spend an hour (from the top of the hour), as "
           "`--daily-credits`"),
)

if {o.field for o in OPTIONS} != {f.name for f in fields(Settings)}:
    raise RuntimeError("OPTIONS and Settings disagree")  # a programming error, caught on import


def shown(default: object) -> str:
    """A default as the README and --help write it."""
    if default is None:
        return "unset"
    return str(default).lower() if isinstance(default, bool) else str(default)


def named(field_name: str) -> str:
    """How a message names a setting: ``--token-file/SMSLEADS_TOKEN_FILE``."""
    option = next(o for o in OPTIONS if o.field == field_name)
    return f"{option.flag}/{option.env}"


def load_settings(argv: Sequence[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Flags win over environment variables, which win over defaults."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="smsleads-proxy", description=__doc__.splitlines()[0])
    defaults = Settings()
    for option in OPTIONS:
        default = getattr(defaults, option.field)
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if isinstance(default, bool) else {}
        parser.add_argument(option.flag, dest=option.field, default=None, metavar=option.env,
                            help=f"{option.help} (env {option.env}, default {shown(default)})",
                            **extra)
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw, origin = getattr(args, option.field), option.flag
        if raw is None and option.env in environ:
            raw, origin = environ[option.env], option.env
        if raw is None:
            continue
        try:
            values[option.field] = option.parse(raw)
        except ValueError as exc:
            shown_raw = "<hidden>" if option.secret else repr(raw)
            detail = str(exc) if "must" in str(exc) else f"cannot read {shown_raw}"
            raise SettingsError(f"invalid {origin}={shown_raw}: {detail}") from exc
    return Settings(**values).check()
