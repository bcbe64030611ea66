"""Alert messages and the webhooks they go to: generic JSON, Slack, Discord, Telegram.

A webhook's URL (Telegram: its bot token) comes from the environment variable its settings name;
it is registered as a secret, so no log line ever shows it: logs name a webhook by its format
and variable (`slack:ARENA_SLACK_WEBHOOK`). Every alert body is redacted before it is sent
(`engine.redact`: registered secrets and whatever is shaped like an API key or a bearer token).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp

from engine.output_settings import WebhookSettings
from engine.redact import redact, redact_value

LEVELS = {"info": 0, "warning": 1, "critical": 2}
_ICONS = {"info": "ℹ️", "warning": "⚠️", "critical": "🚨"}  # noqa: RUF001


@dataclass(frozen=True, slots=True)
class Alert:
    """One thing worth telling a human; `kind` + `subject` is its deduplication key."""

    kind: str  # job_failed, trader_cooldown, feed_disconnected, symbol_stale, writer_spilling,
    #            database_unreachable, liquidation, drawdown, engine_started, engine_stopped
    level: str  # info | warning | critical
    subject: str  # what it is about: a job, a trader, a symbol, the writer, the engine
    text: str  # one line for a human
    ts: float  # engine clock
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.subject

    def line(self) -> str:
        when = datetime.fromtimestamp(self.ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{_ICONS.get(self.level, '')} arena {self.level.upper()}: {self.text} ({when})"


class Transient(Exception):
    """A failure worth retrying: network error, timeout, 429 or 5xx."""


class Refused(Exception):
    """The webhook refused the alert for good (another 4xx): not retried."""


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook ready to post to (its secret resolved from the environment)."""

    format: str
    label: str  # format:ENV_VAR, safe to log
    url: str
    chat_id: str | None = None

    @classmethod
    def resolve(cls, s: WebhookSettings, env: Mapping[str, str]) -> Webhook | None:
        """Return the webhook, or None when its environment variable is unset."""
        secret = env.get(s.url_env, "").strip()
        if not secret:
            return None
        url = secret
        if s.format == "telegram":
            url = f"{s.telegram_api_url.rstrip('/')}/bot{secret}/sendMessage"
        return cls(s.format, f"{s.format}:{s.url_env}", url, s.chat_id)

    def secrets(self) -> list[str]:
        """Return what must never be logged: the URL, and a Telegram token on its own."""
        out = [self.url]
        if self.format == "telegram":
            out.append(self.url.rsplit("/bot", 1)[1].split("/", 1)[0])
        return out

    def body(self, alert: Alert) -> dict[str, Any]:
        """Return the JSON body this webhook's service expects, every text in it redacted
        (`engine.redact`): a second line of defence behind the redaction where errors are made."""
        # Redacted before any truncation, so a cut can never leave part of a key behind.
        clean = replace(alert, subject=redact(alert.subject), text=redact(alert.text),
                        fields=redact_value(dict(alert.fields)))
        return self._body(clean)

    def _body(self, alert: Alert) -> dict[str, Any]:
        if self.format == "slack":
            return {"text": alert.line()}
        if self.format == "discord":
            return {"content": alert.line()[:2000]}
        if self.format == "telegram":
            return {"chat_id": self.chat_id, "text": alert.line()[:4096],
                    "disable_web_page_preview": True}
        return {"source": "arena", "kind": alert.kind, "level": alert.level,
                "subject": alert.subject, "text": alert.text, "ts": alert.ts,
                "time": datetime.fromtimestamp(alert.ts, UTC).isoformat(),
                "fields": dict(alert.fields)}

    async def post(self, http: aiohttp.ClientSession, alert: Alert, timeout: float) -> None:
        """Post the alert once; raise Transient (retry) or Refused (give up)."""
        try:
            async with http.post(self.url, json=self.body(alert),
                                 timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status < 300:
                    return
                text = (await resp.text())[:200]
                if resp.status == 429 or resp.status >= 500:
                    raise Transient(f"http {resp.status}: {text}")
                raise Refused(f"http {resp.status}: {text}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from exc
