"""Settings of what the engine sends out: run reports (`[report]`) and alerts (`[alerts]`).

Kept apart from engine.settings as one subject of their own; `Settings` has one field for each,
and every section builds on `engine.settings_base.Section`.
Webhook URLs and bot tokens are never in the file: each webhook names the environment variable
that holds its URL (Telegram: its bot token).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.settings_base import PositiveFloat, Section


class ReportSettings(Section):
    dir: str = "./data/reports"
    on_exit: bool = True


class WebhookSettings(Section):
    format: Literal["json", "slack", "discord", "telegram"] = "json"
    url_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")]  # env var: URL (telegram: token)
    chat_id: str | None = None  # telegram only
    telegram_api_url: str = "https://api.telegram.org"


class AlertSettings(Section):
    enabled: bool = True
    min_level: Literal["info", "warning", "critical"] = "info"
    dedup_seconds: Annotated[float, Field(ge=0)] = 600.0
    rate_limit_per_minute: Annotated[int, Field(ge=1)] = 20
    timeout_seconds: PositiveFloat = 5.0
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 4
    backoff_seconds: PositiveFloat = 1.0
    queue_size: Annotated[int, Field(ge=1)] = 1000
    stale_symbol_seconds: PositiveFloat = 120.0
    drawdown_pct: Annotated[float, Field(gt=0, le=100)] = 20.0
    check_interval_seconds: PositiveFloat = 30.0
    webhooks: tuple[WebhookSettings, ...] = ()
