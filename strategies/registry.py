"""Build the traders' strategies from settings: rule-based ones by name, LLM ones with a key."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from engine.settings import Secrets, Settings, SettingsError, TraderSettings
from strategies.base import Strategy, registered

if TYPE_CHECKING:
    from engine.clock import Clock
    from engine.traders.session import LLMSession

log = structlog.get_logger("decisions")

# Environment variable holding each provider's key (for the start-up warning).
KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY",
           "deepseek": "DEEPSEEK_API_KEY"}


def build_strategies(settings: Settings, secrets: Secrets, clock: Clock, *,
                     record_llm_dir: str | None = None, session: LLMSession | None = None,
                     live_calls: bool = True) -> dict[str, Strategy]:
    """Make one strategy per enabled trader; LLM traders without an API key are left out.

    With a `session` replaying a recording, an LLM trader the recording holds is built without a
    key (answered from the recording); `live_calls=False` (a replay without --live-llm) never
    hands a key to a client, so nothing calls an API.
    """
    rules = registered()
    out: dict[str, Strategy] = {}
    for trader in settings.traders:
        if not trader.enabled:
            continue
        if trader.strategy == "llm":
            strategy = _build_llm(trader, settings, secrets, clock, record_llm_dir, session,
                                  live_calls)
            if strategy is not None:
                out[trader.name] = strategy
            continue
        factory = rules.get(trader.strategy)
        if factory is None:
            known = ", ".join(["llm", *sorted(rules)])
            raise SettingsError(f"trader {trader.name!r}: unknown strategy {trader.strategy!r}; "
                                f"expected one of {known}")
        out[trader.name] = factory(trader, settings)
    return out


def _build_llm(trader: TraderSettings, settings: Settings, secrets: Secrets, clock: Clock,
               record_llm_dir: str | None, session: LLMSession | None = None,
               live_calls: bool = True) -> Strategy | None:
    assert trader.provider is not None and trader.model is not None  # settings validate it
    key = secrets.api_key(trader.provider) if live_calls else None
    # A backtest keeps its LLM traders: they answer from the cache or hold `not_recorded`.
    recorded = session is not None and session.serves(trader.name)
    if not key and not recorded:
        if secrets.api_key(trader.provider):  # a replay without --live-llm
            log.warning("trader.disabled", trader=trader.name, reason="not_in_recording",
                        detail="the recording holds no call of this trader; --live-llm asks "
                        "the API")
        else:
            log.warning("trader.disabled", trader=trader.name, reason="missing_api_key",
                        env=KEY_ENV[trader.provider])
        return None
    # Imported only now, for a trader that will run: the SDK of its provider and nothing else.
    from engine.traders.providers import FixtureRecorder, make_client
    from strategies.llm import LLMStrategy

    deadline = trader.timeout_seconds or settings.llm.deadline_seconds
    recorder = (FixtureRecorder(record_llm_dir, trader.name, trader.provider, clock)
                if record_llm_dir else None)
    client = make_client(trader.provider, settings.llm.providers[trader.provider], key, clock,
                         recorder=recorder, session=session, trader=trader.name)
    return LLMStrategy(trader, client, clock, settings.llm, deadline_seconds=deadline)
