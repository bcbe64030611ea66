"""Settings: settings.toml loaded with tomllib into typed, validated, frozen objects.

Every section is a pydantic model that forbids unknown keys. A bad file raises `SettingsError`
with one message naming the key, the bad value and what is expected; run.py turns that into exit
code 2. Secrets never live in the file: `Secrets.from_env()` reads them from the environment.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

# re-exported: engine.settings has every section
from engine.broker_settings import BrokerSettings as BrokerSettings
from engine.broker_settings import LeaderboardSettings as LeaderboardSettings
from engine.broker_settings import MarginBracket as MarginBracket
from engine.broker_settings import SymbolFilter as SymbolFilter
from engine.llm_settings import NATIVE_PROVIDERS as NATIVE_PROVIDERS
from engine.llm_settings import LLMSettings as LLMSettings
from engine.llm_settings import ModelPrice as ModelPrice
from engine.llm_settings import ProviderSettings as ProviderSettings
from engine.output_settings import AlertSettings as AlertSettings
from engine.output_settings import ReportSettings as ReportSettings
from engine.settings_base import PositiveFloat as PositiveFloat
from engine.settings_base import Section as Section
from engine.settings_merge import merge, read_toml

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "settings.toml"


class SettingsError(Exception):
    """A settings file that cannot be used; the message names the key and what is expected."""


# ---------------------------------------------------------------- engine


class EngineSettings(Section):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=600)] = 30.0
    dry_run: bool = False
    snapshot_interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    ready_wait_seconds: Annotated[float, Field(ge=0, le=600)] = 30.0  # fresh prices before ready
    loop_lag_interval_seconds: Annotated[float, Field(gt=0, le=10)] = 0.05
    loop_lag_warn_seconds: Annotated[float, Field(gt=0)] = 0.1
    gc_interval_seconds: Annotated[float, Field(ge=0)] = 3600.0  # 0: only Python's own collections


# ---------------------------------------------------------------- market data


class FeedSettings(Section):
    market: Literal["futures", "spot"] = "futures"
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT")
    futures_ws_url: str = "wss://fstream.binance.com"
    futures_rest_url: str = "https://fapi.binance.com"
    spot_ws_url: str = "wss://stream.binance.com:9443"
    spot_rest_url: str = "https://api.binance.com"
    max_price_age_seconds: Annotated[float, Field(gt=0)] = 10.0
    backfill_candles: Annotated[int, Field(ge=0, le=1500)] = 500
    timeframes: tuple[str, ...] = ("15m", "4h")
    reconnect_after_hours: Annotated[float, Field(gt=0, le=24)] = 23.5
    max_backoff_seconds: Annotated[float, Field(gt=0)] = 60.0
    min_backoff_seconds: Annotated[float, Field(ge=0)] = 1.0
    backfill_higher_candles: Annotated[int, Field(ge=0, le=1500)] = 100
    indicator_candles: Annotated[int, Field(ge=60, le=5000)] = 500
    max_frame_bytes: Annotated[int, Field(ge=1024)] = 65_536
    rest_weight_per_minute: Annotated[int, Field(ge=1)] = 1200
    rest_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    max_candles: Annotated[int, Field(ge=100)] = 5000

    @field_validator("symbols")
    @classmethod
    def _symbols_upper(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one symbol is required")
        for s in v:
            if not re.fullmatch(r"[A-Z0-9]{2,20}", s):
                raise ValueError(f"symbol {s!r} must be upper-case letters/digits like BTCUSDT")
        if len(set(v)) != len(v):
            raise ValueError("symbols must be unique")
        return v

    @field_validator("timeframes")
    @classmethod
    def _timeframes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for tf in v:
            if not re.fullmatch(r"\d+[mhd]", tf):
                raise ValueError(f"timeframe {tf!r} must look like 15m, 1h, 4h or 1d")
        return v

    @property
    def ws_url(self) -> str:
        return self.futures_ws_url if self.market == "futures" else self.spot_ws_url

    @property
    def rest_url(self) -> str:
        return self.futures_rest_url if self.market == "futures" else self.spot_rest_url


# ---------------------------------------------------------------- broker and risk


class RiskSettings(Section):
    max_leverage: Annotated[int, Field(ge=1, le=125)] = 10
    max_position_pct: Annotated[float, Field(gt=0, le=1000)] = 50.0
    max_total_exposure_pct: Annotated[float, Field(gt=0, le=10000)] = 300.0
    max_open_positions: Annotated[int, Field(ge=1)] = 6
    min_stop_distance_pct: Annotated[float, Field(ge=0, le=100)] = 0.1
    daily_loss_limit_pct: Annotated[float, Field(gt=0, le=100)] = 10.0
    max_drawdown_pct: Annotated[float, Field(gt=0, le=100)] = 40.0


# ---------------------------------------------------------------- decisions


class BacktestSettings(Section):  # `run.py backtest`: engine/market/history.py, app/backtest.py
    cache_dir: str = "./data/history"  # fetched Binance history, one file per symbol and UTC day
    max_days: Annotated[float, Field(gt=0, le=366)] = 31.0  # longest window accepted
    spread_bps: Annotated[float, Field(ge=0, le=1000)] = 2.0  # book spread around each 1m price
    max_candles: Annotated[int, Field(ge=300)] = 1000  # 1m candles kept in memory (speed)
    board_every_cycles: Annotated[int, Field(ge=1)] = 288  # shown CIs: every N cycles (a day)


class LLMCacheSettings(Section):  # the LLM answer cache (engine/traders/cache.py): when used
    live: bool = False  # live runs: off by default (a live market never repeats a prompt)
    replay: bool = True  # replays and backtests (answers from --live-llm calls are kept)


class RateLimitSettings(Section):  # one provider's rate budget, shared by every run (sweeps)
    requests_per_minute: Annotated[float, Field(gt=0)] = 50.0
    tokens_per_minute: Annotated[float, Field(gt=0)] = 40_000.0
    slow_down_seconds: Annotated[float, Field(gt=0)] = 30.0  # after a 429, for every run


class TraderSettings(Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
    strategy: str  # "llm" or a rule-based strategy name in strategies/
    provider: str | None = None  # a name of [llm.providers]
    model: str | None = None  # a model of the models table [llm.prices]
    # Spend caps of this trader in USD (None: llm.budget's trader caps apply)
    daily_budget_usd: Annotated[float, Field(gt=0)] | None = None
    total_budget_usd: Annotated[float, Field(gt=0)] | None = None
    starting_capital: PositiveFloat = 10_000.0
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.2
    max_tokens: Annotated[int, Field(ge=16, le=64_000)] = 1500
    timeout_seconds: Annotated[float, Field(gt=0, le=600)] | None = None
    enabled: bool = True
    params: dict[str, Any] = Field(default_factory=dict)
    # LLM traders: a system-prompt template file keeping {actions}, {rules}, {answer} (hashed in)
    prompt_template: str | None = None
    blind: bool = False  # LLM traders: no dates, real symbols or price levels (docs/backtests.md)

    @model_validator(mode="after")
    def _llm_needs_provider(self) -> TraderSettings:
        if self.strategy == "llm" and (self.provider is None or self.model is None):
            raise ValueError(f"trader {self.name!r}: strategy 'llm' needs provider and model")
        return self


# ---------------------------------------------------------------- persistence and control


class DatabaseSettings(Section):
    embedded_dir: str = "./data/pg"
    batch_rows: Annotated[int, Field(ge=1, le=100_000)] = 500
    flush_ms: Annotated[int, Field(ge=1, le=60_000)] = 250
    max_buffer_rows: Annotated[int, Field(ge=100)] = 100_000
    spill_path: str = "./data/spill.jsonl"
    max_backoff_seconds: Annotated[float, Field(gt=0)] = 30.0
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    write_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    shutdown_flush_seconds: Annotated[float, Field(gt=0)] = 10.0
    # Fail closed (engine.store.writer, docs/operations/storage.md).
    max_halted_rows: Annotated[int, Field(ge=100)] = 500_000
    last_resort_dir: str = ""  # "" = the system temp directory
    unhealthy_after_seconds: Annotated[float, Field(gt=0)] = 10.0
    # Bounded waits on the database.
    statement_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    lock_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    idle_in_transaction_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    query_statement_timeout_seconds: Annotated[float, Field(gt=0)] = 300.0
    keepalive_seconds: Annotated[float, Field(ge=1)] = 10.0
    spill_replay_seconds: Annotated[float, Field(gt=0)] = 120.0


class ControlSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    allowed_hosts: tuple[str, ...] = ("localhost",)  # Host names besides the bound address
    protect_reads: bool = False  # reads need the token too (/, /static, /health stay open)
    body_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0
    max_body_bytes: Annotated[int, Field(ge=1024, le=10_000_000)] = 65_536
    header_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0  # request head, else 408

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for h in v:
            if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}|\[?[0-9A-Fa-f:.]+\]?", h):
                raise ValueError(f"host {h!r} must be a bare host name or IP (no port, no scheme)")
        return v


# ---------------------------------------------------------------- jobs


class JobSettings(Section):
    name: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")]
    run: Literal["trading_cycle", "health_check", "account_sync"]
    schedule: Literal["interval", "daily", "once"]
    interval_seconds: Annotated[float, Field(gt=0)] | None = None
    daily_time: str | None = None
    delay_seconds: Annotated[float, Field(ge=0)] = 0.0
    enabled: bool = True
    tags: tuple[str, ...] = ()
    timeout_seconds: Annotated[float, Field(gt=0)] = 300.0
    description: str = ""

    @field_validator("daily_time")
    @classmethod
    def _hhmm(cls, v: str | None) -> str | None:
        if v is not None:
            m = re.fullmatch(r"(\d{2}):(\d{2})", v)
            if not m or int(m[1]) > 23 or int(m[2]) > 59:
                raise ValueError("must be HH:MM in UTC, 00:00 to 23:59")
        return v

    @model_validator(mode="after")
    def _schedule_fields(self) -> JobSettings:
        if self.schedule == "interval" and self.interval_seconds is None:
            raise ValueError(f"job {self.name!r}: schedule 'interval' needs interval_seconds")
        if self.schedule == "daily" and self.daily_time is None:
            raise ValueError(f"job {self.name!r}: schedule 'daily' needs daily_time (HH:MM UTC)")
        return self


def _default_jobs() -> tuple[JobSettings, ...]:
    def every(name: str, seconds: float, tag: str, timeout: float) -> JobSettings:
        return JobSettings(name=name, run=name, schedule="interval", interval_seconds=seconds,
                           tags=(tag,), timeout_seconds=timeout)  # fmt: skip

    return (
        every("trading_cycle", 300, "trading", 240),
        every("health_check", 900, "ops", 30),
        every("account_sync", 600, "ops", 30),
    )


class Settings(Section):
    engine: EngineSettings = EngineSettings()
    feed: FeedSettings = FeedSettings()
    broker: BrokerSettings = BrokerSettings()
    risk: RiskSettings = RiskSettings()
    leaderboard: LeaderboardSettings = LeaderboardSettings()
    llm: LLMSettings = LLMSettings()
    llm_cache: LLMCacheSettings = LLMCacheSettings()
    # engine.traders.rate_budget
    rate_limits: dict[str, RateLimitSettings] = Field(default_factory=dict)
    backtest: BacktestSettings = BacktestSettings()
    traders: tuple[TraderSettings, ...] = ()
    database: DatabaseSettings = DatabaseSettings()
    control: ControlSettings = ControlSettings()
    report: ReportSettings = ReportSettings()
    alerts: AlertSettings = AlertSettings()
    jobs: tuple[JobSettings, ...] = Field(default_factory=_default_jobs)

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        for kind, names in (
            ("traders", [t.name for t in self.traders]),
            ("jobs", [j.name for j in self.jobs]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(dupes)}")
        self._check_llm_traders()
        return self

    def _check_llm_traders(self) -> None:
        """Every LLM trader names a declared provider and a model of the models table."""
        for t in self.traders:
            if t.strategy != "llm" or t.provider is None or t.model is None:
                continue
            if t.provider not in self.llm.providers:
                raise ValueError(
                    f"trader {t.name!r}: unknown provider {t.provider!r}; declare "
                    f"[llm.providers.{t.provider}] with kind and base_url (known: "
                    f"{', '.join(sorted(self.llm.providers))})")
            if t.model not in self.llm.prices:
                raise ValueError(
                    f"trader {t.name!r}: model {t.model!r} is not in the models table; add "
                    f'[llm.prices."{t.model}"] with input and output (USD per million tokens)')

    def digest(self) -> str:
        """Return a short hash of the effective settings (stored with each run)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def _format_error(exc: ValidationError, path: Path) -> str:
    err = exc.errors(include_url=False)[0]
    key = ""
    for part in err["loc"]:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    key = key or "(top level)"
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown key '{key}' (value {value!r}); remove it or check its spelling"
    if err["type"] == "missing":
        return f"{path}: missing key '{key}': {err['msg'].lower()}"
    if not err["loc"] and err["type"] == "value_error":  # a check across sections: its message
        return f"{path}: {err['msg'].removeprefix('Value error, ')}"
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    expected = re.sub(r"^(input should be|value error,)\s*", "", err["msg"], flags=re.I)
    return f"{path}: bad value for '{key}': {shown}; expected {expected}"


def load_settings(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Load and validate settings from `path` (default: ./settings.toml next to run.py),
    merged over settings.toml's values: a key the file leaves out takes the value shown there."""
    path = Path(path) if path is not None else DEFAULT_PATH
    raw = read_toml(path, SettingsError)
    if path.resolve() != DEFAULT_PATH.resolve() and DEFAULT_PATH.is_file():
        raw = merge(read_toml(DEFAULT_PATH, SettingsError), raw)
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(_format_error(exc, path)) from None


@dataclass(frozen=True, slots=True, repr=False)
class Secrets:
    """Secrets from the environment only; `repr` never shows them."""

    anthropic_api_key: str | None
    openai_api_key: str | None
    deepseek_api_key: str | None
    database_url: str | None
    control_token: str | None
    # Every non-empty *_API_KEY variable (name, value): the key of a provider's api_key_env.
    llm_keys: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Secrets:
        """Read every secret from the environment (empty values count as missing)."""
        env = dict(os.environ) if env is None else env

        def get(name: str) -> str | None:
            return env.get(name) or None

        return cls(
            anthropic_api_key=get("ANTHROPIC_API_KEY"),
            openai_api_key=get("OPENAI_API_KEY"),
            deepseek_api_key=get("DEEPSEEK_API_KEY"),
            database_url=get("DATABASE_URL"),
            control_token=get("ARENA_CONTROL_TOKEN"),
            llm_keys=tuple(sorted((k, v) for k, v in env.items()
                                  if k.endswith("_API_KEY") and v)),
        )

    def api_key(self, provider: str, env: str | None = None) -> str | None:
        """Return the API key of an LLM provider: from its `api_key_env` variable when given,
        else from the variable inferred for the names anthropic, openai and deepseek."""
        native = {
            "anthropic": self.anthropic_api_key,
            "openai": self.openai_api_key,
            "deepseek": self.deepseek_api_key,
        }
        inferred = NATIVE_PROVIDERS.get(provider, {}).get("api_key_env")
        if env is None or env == inferred:
            if provider in native:
                return native[provider]
            env = env or inferred
        return dict(self.llm_keys).get(env) if env else None

    def values(self) -> list[str]:
        """Return every secret value, and the password inside DATABASE_URL, for log redaction."""
        out = [
            v
            for v in (
                self.anthropic_api_key,
                self.openai_api_key,
                self.deepseek_api_key,
                self.database_url,
                self.control_token,
                *(v for _, v in self.llm_keys),
            )
            if v
        ]
        if self.database_url:
            m = re.search(r"://[^:/@]+:([^@]+)@", self.database_url)
            if m:
                out.append(m[1])
        return out

    def __repr__(self) -> str:
        return "Secrets(<redacted>)"
