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

def key_env(settings: Settings, provider: str) -> str | None:
    """Return the environment variable holding `provider`'s API key."""
    p = settings.llm.providers.get(provider)
    return p.api_key_env if p is not None else None


def provider_key(settings: Settings, secrets: Secrets, provider: str) -> str | None:
    """Return `provider`'s API key from its api_key_env variable."""
    return secrets.api_key(provider, key_env(settings, provider))


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
    provider_settings = settings.llm.providers.get(trader.provider)
    if provider_settings is None:
        raise SettingsError(f"trader {trader.name!r}: unknown provider {trader.provider!r}; "
                            f"declare [llm.providers.{trader.provider}]")
    has_key = provider_key(settings, secrets, trader.provider)
    key = has_key if live_calls else None
    # A backtest keeps its LLM traders: they answer from the cache or hold `not_recorded`; so
    # does a replay, for a trader the recording does not hold (--live-llm asks the API instead).
    replaying = session is not None and getattr(session, "tape", None) is not None
    recorded = session is not None and (session.serves(trader.name) or replaying)
    if replaying and session is not None and not session.recorded(trader.name):
        log.warning("trader.not_in_recording", trader=trader.name,
                    detail="--live-llm: it asks the API" if key
                    else "it holds with not_recorded (--live-llm asks the API)")
    if not key and not recorded:
        log.warning("trader.disabled", trader=trader.name, reason="missing_api_key",
                    env=key_env(settings, trader.provider))
        return None
    # Imported only now, for a trader that will run: the SDK of its provider and nothing else.
    from engine.traders.kinds import make_client
    from engine.traders.providers import FixtureRecorder
    from strategies.llm import LLMStrategy

    deadline = trader.timeout_seconds or settings.llm.deadline_seconds
    recorder = (FixtureRecorder(record_llm_dir, trader.name, trader.provider, clock)
                if record_llm_dir else None)
    client = make_client(trader.provider, provider_settings, key, clock,
                         recorder=recorder, session=session, trader=trader.name)
    return LLMStrategy(trader, client, clock, settings.llm, deadline_seconds=deadline)
