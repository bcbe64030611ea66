"""The SDKs are warmed once per client class from the settings alone, before the traders exist
(engine.traders.warmup.prewarm), and only for the providers whose traders will call an API."""

from __future__ import annotations

from structlog.testing import capture_logs

from engine.app.build import providers_to_warm
from engine.app.options import Options
from engine.settings import ProviderSettings, Secrets, load_settings
from engine.traders.warmup import prewarm
from tests.traders.test_any_provider import EXAMPLE  # issue 23's qwen provider and trader

SETTINGS = EXAMPLE + """\
[[traders]]
name = "claude"
strategy = "llm"
provider = "anthropic"
model = "claude-sonnet-4-6"
starting_capital = 10000
[[traders]]
name = "gpt-4o"
strategy = "llm"
provider = "openai"
model = "gpt-4o"
starting_capital = 10000
"""


async def test_each_client_class_is_warmed_once_however_many_providers_share_it() -> None:
    providers = {
        "deepseek": (None, "deepseek-chat"),  # kind inferred: openai_compatible
        "qwen": (ProviderSettings(kind="openai_compatible", base_url="http://127.0.0.1:9/v1"),
                 "qwen3-max"),
        "anthropic": (None, "claude-sonnet-4-6"),
    }
    with capture_logs() as logs:
        took = await prewarm(providers)
    assert sorted(took) == ["anthropic", "openai_compatible"]  # qwen shares deepseek's class
    assert all(seconds > 0 for seconds in took.values())
    assert not [x for x in logs if x["event"] == "llm.prewarm_failed"]


async def test_a_provider_without_a_kind_is_left_to_the_settings_check() -> None:
    assert await prewarm({"mystery": (ProviderSettings(base_url="http://127.0.0.1:9"), "m")}) \
        == {}


def test_only_providers_whose_traders_will_call_an_api_are_warmed(tmp_path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(SETTINGS)
    settings = load_settings(path)
    secrets = Secrets.from_env({"QWEN_API_KEY": "k", "ANTHROPIC_API_KEY": "k"})  # no OpenAI key
    live = providers_to_warm(settings, secrets, Options())
    assert sorted(live) == ["anthropic", "qwen"]
    assert live["qwen"][1] == "qwen3-max" and live["qwen"][0].kind == "openai_compatible"
    # a replay without --live-llm hands no key to a client; with it, the same as live
    assert providers_to_warm(settings, secrets, Options(replay="x.jsonl.gz")) == {}
    assert sorted(providers_to_warm(settings, secrets,
                                    Options(replay="x.jsonl.gz", live_llm=True))) == sorted(live)
