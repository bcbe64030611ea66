"""`--record-llm DIR`: every real exchange saved in the exact format the tests replay."""

from __future__ import annotations

import json

from aioresponses import aioresponses

from engine.settings import Secrets, Settings
from engine.traders.fixtures import (
    context,
    llm_settings,
    load_fixture,
    register_fixture,
    response_headers,
    trader,
)
from engine.traders.kinds import make_client
from engine.traders.providers import FixtureRecorder
from strategies.llm import LLMStrategy
from strategies.registry import build_strategies

KEY = "sk-ant-secret-key-123"


def recording_strategy(clock, tmp_path, provider="anthropic", model="claude-sonnet-4-6"):
    settings = llm_settings()
    recorder = FixtureRecorder(tmp_path, "claude", provider, clock)
    client = make_client(provider, settings.providers[provider], KEY, clock, recorder=recorder)
    return LLMStrategy(trader("claude", provider, model), client, clock, settings,
                       deadline_seconds=60), recorder


async def test_each_exchange_is_saved_with_request_and_response(clock, tmp_path):
    served = load_fixture("anthropic/tool_call")
    strategy, recorder = recording_strategy(clock, tmp_path)
    with aioresponses() as mocked:
        register_fixture(mocked, served)
        out = await strategy.decide(context())
    await strategy.aclose()

    [path] = recorder.saved
    saved = json.loads(path.read_text())
    assert saved["provider"] == "anthropic"
    assert saved["request"]["method"] == "POST"
    assert saved["request"]["url"] == "https://api.anthropic.com/v1/messages"
    assert saved["request"]["body"]["tool_choice"] == {"type": "tool", "name": "submit_decision"}
    assert saved["request"]["body"]["messages"][0]["content"].startswith("Cycle c-1 at")
    assert saved["response"]["status"] == 200
    assert saved["response"]["body"] == served["response"]["body"]
    assert saved["response"]["headers"]["request-id"] == out.request_id
    assert KEY not in path.read_text()  # the key never reaches a fixture file


async def test_a_recorded_fixture_replays_to_the_same_decision(clock, tmp_path):
    strategy, recorder = recording_strategy(clock, tmp_path, "openai", "gpt-4o")
    with aioresponses() as mocked:
        register_fixture(mocked, "openai/json_schema")
        original = await strategy.decide(context())
    await strategy.aclose()

    replayer, _ = recording_strategy(clock, tmp_path / "again", "openai", "gpt-4o")
    recorded = json.loads(recorder.saved[0].read_text())
    with aioresponses() as mocked:
        register_fixture(mocked, recorded)
        replayed = await replayer.decide(context())
    await replayer.aclose()

    assert replayed.decision == original.decision and replayed.valid
    assert replayed.request_id == original.request_id
    served = response_headers(load_fixture("openai/json_schema"))
    account = {"openai-organization", "openai-project"}
    assert account <= set(served)  # the served response carries them...
    assert response_headers(recorded) == {k: v for k, v in served.items() if k not in account}


async def test_cookies_and_organisation_headers_never_reach_a_file(clock, tmp_path):
    strategy, recorder = recording_strategy(clock, tmp_path)
    with aioresponses() as mocked:
        register_fixture(mocked, "anthropic/tool_call", headers={
            "set-cookie": "__cf_bm=abc; path=/; HttpOnly", "openai-project": "proj_123"})
        await strategy.decide(context())
    await strategy.aclose()

    text = recorder.saved[0].read_text()
    saved = json.loads(text)["response"]["headers"]
    assert "request-id" in saved
    assert not {"set-cookie", "anthropic-organization-id", "openai-project"} & set(saved)
    assert "__cf_bm" not in text and "4c1e7a52" not in text and "proj_123" not in text


async def test_retries_are_recorded_as_separate_exchanges(clock, tmp_path):
    strategy, recorder = recording_strategy(clock, tmp_path)
    with aioresponses() as mocked:
        register_fixture(mocked, "anthropic/overloaded_529", headers={"retry-after-ms": "1"})
        register_fixture(mocked, "anthropic/tool_call")
        await strategy.decide(context())
    await strategy.aclose()

    statuses = [json.loads(p.read_text())["response"]["status"] for p in recorder.saved]
    assert statuses == [529, 200]
    retry_counts = [json.loads(p.read_text())["request"]["headers"]["x-stainless-retry-count"]
                    for p in recorder.saved]
    assert retry_counts == ["0", "1"]


async def test_build_strategies_records_when_given_a_directory(clock, tmp_path):
    settings = Settings.model_validate({"traders": [
        {"name": "gpt", "strategy": "llm", "provider": "openai", "model": "gpt-4o"}]})
    built = build_strategies(settings, Secrets.from_env({"OPENAI_API_KEY": "sk-o"}), clock,
                             record_llm_dir=str(tmp_path / "rec"))
    with aioresponses() as mocked:
        register_fixture(mocked, "openai/json_schema")
        await built["gpt"].decide(context("gpt"))
    await built["gpt"].aclose()

    [path] = (tmp_path / "rec").iterdir()
    assert path.name.startswith("gpt-") and path.name.endswith("-200.json")


def test_a_body_is_kept_as_json_or_as_text_whatever_parser_takes_it() -> None:
    from engine.traders.recorder import json_or_text

    assert json_or_text('{"a": [1, 2.5, "é"], "b": null}') == {"a": [1, 2.5, "é"], "b": None}
    big = 2**70  # past orjson's 64 bits: json takes it
    assert json_or_text(f'{{"n": {big}}}') == {"n": big}
    assert json_or_text("<html>rate limited</html>") == "<html>rate limited</html>"
