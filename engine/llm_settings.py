"""The [llm] settings: providers by name and kind, the models table, spend caps.

Re-exported by `engine.settings` (import them from there). `[llm.providers.NAME]` declares an
endpoint; for the names anthropic, openai and deepseek its kind, base_url and api_key_env are
inferred (`NATIVE_PROVIDERS`), and those three always exist. `[llm.prices."MODEL"]` is the models
table: prices per million tokens (required) and, optionally, the context window, the
training-data cutoff and the structured-output modes the model supports; `DEFAULT_MODELS` are
always there unless the file gives its own entry. `[llm.budget]` caps spending in USD.
"""

from __future__ import annotations

import re
from datetime import date as date_type
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator

from engine.settings_base import Section

ProviderKind = Literal["anthropic", "openai", "openai_compatible"]
# How an answer's structure is asked for, most to least strict; "auto" starts at the kind's first
# and steps down on the first refusal of the endpoint (engine/traders/providers.py).
OutputMode = Literal["json_schema", "tool", "json_object", "text"]
OUTPUT_MODES: dict[str, tuple[str, ...]] = {
    "anthropic": ("tool", "text"),
    "openai": ("json_schema", "tool", "json_object", "text"),
    "openai_compatible": ("json_schema", "tool", "json_object", "text"),
}
# The providers every settings file has unless it declares them itself: name -> what is inferred.
NATIVE_PROVIDERS: dict[str, dict[str, Any]] = {
    "anthropic": {"kind": "anthropic", "base_url": "https://api.anthropic.com",
                  "api_key_env": "ANTHROPIC_API_KEY"},
    "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1",
               "api_key_env": "OPENAI_API_KEY"},
    # DeepSeek speaks OpenAI's API; it takes JSON mode but not a json_schema response format.
    "deepseek": {"kind": "openai_compatible", "base_url": "https://api.deepseek.com",
                 "api_key_env": "DEEPSEEK_API_KEY", "structured_output": "json_object"},
}


class ProviderSettings(Section):
    """One endpoint: `[llm.providers.NAME]`. kind, base_url and api_key_env are inferred for the
    names anthropic, openai and deepseek; any other name must give kind and base_url."""

    kind: ProviderKind | None = None
    base_url: str | None = None
    # the variable holding the key; it must end in _API_KEY: only those variables are read as
    # keys (and redacted from every log line and row)
    api_key_env: str | None = None
    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    structured_output: Literal["auto"] | OutputMode = "auto"

    @field_validator("api_key_env")
    @classmethod
    def _key_variable(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*_API_KEY", v):
            raise ValueError("an environment variable name ending in _API_KEY (only those are "
                             "read as keys and redacted)")
        return v


class ModelPrice(Section):
    """One model of the models table `[llm.prices."MODEL"]`: USD per million tokens (required)
    and what is known of the model (optional)."""

    input: Annotated[float, Field(ge=0)]
    output: Annotated[float, Field(ge=0)]
    cache_read: Annotated[float, Field(ge=0)] = 0.0
    cache_write: Annotated[float, Field(ge=0)] = 0.0
    context_window: Annotated[int, Field(ge=1)] | None = None  # tokens; None: not stated
    # The last day of the model's training data, or "unknown" (the backtest uses it: a window
    # before the cutoff may be in the model's memory). Read it as `training_cutoff` (a date or
    # None) and `training_cutoff_known` (False for "unknown" or not given).
    training_cutoff_text: str | None = Field(default=None, alias="training_cutoff")
    # The structured-output modes the model is known to support (informative: the provider's
    # `structured_output` decides what is asked).
    structured_output: tuple[OutputMode, ...] = ()

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, populate_by_name=True)

    @field_validator("training_cutoff_text", mode="before")
    @classmethod
    def _cutoff(cls, v: Any) -> Any:
        if v is None or (isinstance(v, str) and v == "unknown"):
            return v
        if isinstance(v, date_type):
            return v.isoformat()
        if isinstance(v, str):
            try:
                return date_type.fromisoformat(v).isoformat()
            except ValueError:
                pass
        raise ValueError('a date "YYYY-MM-DD" or "unknown"')

    @property
    def training_cutoff(self) -> date_type | None:
        """Return the training-data cutoff, None when unknown or not given."""
        t = self.training_cutoff_text
        return None if t is None or t == "unknown" else date_type.fromisoformat(t)

    @property
    def training_cutoff_known(self) -> bool:
        """Return True when the training-data cutoff is a date."""
        return self.training_cutoff is not None


# The models table's shipped entries (settings.toml repeats them with each figure's source): a
# settings file's own [llm.prices."MODEL"] replaces an entry or adds a model.
DEFAULT_MODELS: dict[str, dict[str, Any]] = {
    # platform.claude.com/docs/models/sonnet-4-6/overview: $3 / $15 per MTok, 1M context;
    # cache read 0.1x and 5-minute cache write 1.25x input (Anthropic's prompt-caching prices)
    "claude-sonnet-4-6": {"input": 3.0, "output": 15.0, "cache_read": 0.30, "cache_write": 3.75,
                          "context_window": 1_000_000, "training_cutoff": "unknown",
                          "structured_output": ("tool", "text")},
    # OpenAI's gpt-4o model page: $2.50 / $10, cached input $1.25, 128,000 context, knowledge
    # cutoff Oct 01, 2023 (seen here only in third-party copies: October 2023)
    "gpt-4o": {"input": 2.5, "output": 10.0, "cache_read": 1.25, "context_window": 128_000,
               "training_cutoff": "2023-10-01",
               "structured_output": ("json_schema", "tool", "json_object", "text")},
    # DeepSeek's pricing page (cache miss $0.27, hit $0.07, output $1.10 as first configured);
    # its context window and training cutoff are not stated where we could confirm them
    "deepseek-chat": {"input": 0.27, "output": 1.10, "cache_read": 0.07,
                      "training_cutoff": "unknown",
                      "structured_output": ("json_object", "text")},
}


class BudgetSettings(Section):
    """USD spend caps on LLM calls (None: no cap); a capped trader holds with reason `budget`."""

    trader_daily_usd: Annotated[float, Field(gt=0)] | None = None  # each trader, per UTC day
    trader_total_usd: Annotated[float, Field(gt=0)] | None = None  # each trader, whole run
    run_daily_usd: Annotated[float, Field(gt=0)] | None = None  # all traders, per UTC day
    run_total_usd: Annotated[float, Field(gt=0)] | None = None  # all traders, whole run


def _with_native_providers(raw: Any) -> Any:
    """Fill what is inferred for the native providers and add those the file leaves out."""
    if not isinstance(raw, dict):
        return raw
    out: dict[str, Any] = {}
    given = dict(raw)
    for name in NATIVE_PROVIDERS:
        given.setdefault(name, {})
    for name, value in given.items():
        inferred = NATIVE_PROVIDERS.get(name)
        if isinstance(value, ProviderSettings):
            if inferred:
                value = value.model_copy(update={
                    k: v for k, v in inferred.items()
                    if getattr(value, k) is None
                    or (k == "structured_output" and value.structured_output == "auto")})
            out[name] = value
        elif isinstance(value, dict) and inferred:
            out[name] = {**inferred, **value}
        else:
            out[name] = value
    return out


class LLMSettings(Section):
    deadline_seconds: Annotated[float, Field(gt=0, le=600)] = 60.0
    max_consecutive_failures: Annotated[int, Field(ge=1)] = 3
    cooldown_seconds: Annotated[float, Field(ge=0)] = 1800.0
    recent_fills: Annotated[int, Field(ge=0)] = 10
    recent_decisions: Annotated[int, Field(ge=0)] = 5
    # Hours between two funding times, shown in the prompt (Binance's interval for the defaults).
    funding_interval_hours: Annotated[float, Field(gt=0, le=24)] = 8.0
    providers: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")],
                    ProviderSettings] = Field(
        default_factory=lambda: {k: ProviderSettings.model_validate(v)
                                 for k, v in NATIVE_PROVIDERS.items()})
    # The models table: USD per million tokens and what is known of each model (DEFAULT_MODELS
    # are always there unless the file gives its own entry of that model).
    prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: {k: ModelPrice.model_validate(v)
                                 for k, v in DEFAULT_MODELS.items()})
    # Model ids that reject sampling parameters (newer Claude models): temperature is not sent.
    omit_temperature: tuple[str, ...] = ()
    budget: BudgetSettings = BudgetSettings()

    @field_validator("providers", mode="before")
    @classmethod
    def _native(cls, v: Any) -> Any:
        return _with_native_providers(v)

    @field_validator("prices", mode="before")
    @classmethod
    def _default_models(cls, v: Any) -> Any:
        return {**DEFAULT_MODELS, **v} if isinstance(v, dict) else v

    @field_validator("providers")
    @classmethod
    def _complete(cls, v: dict[str, ProviderSettings]) -> dict[str, ProviderSettings]:
        for name, p in v.items():
            if p.kind is None or p.base_url is None:
                raise ValueError(f"provider {name!r} needs kind (anthropic, openai or "
                                 "openai_compatible) and base_url")
            if p.structured_output not in ("auto", *OUTPUT_MODES[p.kind]):
                raise ValueError(f"provider {name!r}: structured_output "
                                 f"{p.structured_output!r} is not one of "
                                 f"{', '.join(('auto', *OUTPUT_MODES[p.kind]))} for {p.kind}")
        return v
