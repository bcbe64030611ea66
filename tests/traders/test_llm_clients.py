"""LLM traders through the real SDK clients over aiohttp, served recorded API responses."""

from __future__ import annotations

import aiohttp
import pytest
from aioresponses import aioresponses

from engine.clock import SimClock
from engine.traders.fixtures import (
    context,
    llm_settings,
    load_fixture,
    register_fixture,
    sent_requests,
    trader,
)
from engine.traders.kinds import make_client
from strategies.llm import LLMStrategy

MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o", "deepseek": "deepseek-chat"}


def strategy(clock: SimClock, provider: str, *, max_retries: int = 2, deadline: float = 60.0,
             model: str | None = None, **settings_kw: object) -> LLMStrategy:
    settings = llm_settings(max_retries=max_retries, **settings_kw)
    t = trader(f"{provider}-trader", provider, model or MODELS[provider])
    client = make_client(provider, settings.providers[provider], "sk-test-key", clock)
    return LLMStrategy(t, client, clock, settings, deadline_seconds=deadline)


@pytest.fixture
def mocked():
    with aioresponses() as m:
        yield m


async def test_anthropic_forced_tool_call_becomes_the_decision(clock, mocked):
    register_fixture(mocked, "anthropic/tool_call")
    s = strategy(clock, "anthropic")
    out = await s.decide(context())
    await s.aclose()

    assert out.valid and out.error is None
    [btc, eth] = out.decision.actions
    assert (btc.symbol, btc.action, btc.size_usdt, btc.leverage) == ("BTCUSDT", "open_long",
                                                                     2000, 3)
    assert (btc.stop_loss, btc.take_profit, btc.confidence) == (95100, 101800, 0.64)
    assert eth.action == "hold"
    assert out.request_id == "req_011CVb1mQ7w3Ht9kXy2Zr4Pa"
    assert (out.input_tokens, out.output_tokens, out.cache_read_tokens) == (1894, 212, 1536)
    assert out.cost_usd == pytest.approx((1894 * 3 + 212 * 15 + 1536 * 0.3) / 1e6)
    assert (out.provider, out.model) == ("anthropic", "claude-sonnet-4-6")
    [request] = sent_requests(mocked)
    body = request["json"]
    assert body["tool_choice"] == {"type": "tool", "name": "submit_decision"}
    assert body["tools"][0]["input_schema"]["required"] == ["actions"]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 1500
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}


async def test_openai_strict_json_schema_answer_becomes_the_decision(clock, mocked):
    register_fixture(mocked, "openai/json_schema")
    s = strategy(clock, "openai")
    out = await s.decide(context())
    await s.aclose()

    assert out.valid
    assert [a.action for a in out.decision.actions] == ["open_long", "hold"]
    assert out.request_id == "req_8f3c1a9e5b2d4c7f9a1e3b5d7c9f2a4e"
    # prompt_tokens 3312 of which 2048 cached: billed apart
    assert (out.input_tokens, out.cache_read_tokens, out.output_tokens) == (1264, 2048, 168)
    fmt = sent_requests(mocked)[0]["json"]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["additionalProperties"] is False


async def test_deepseek_json_mode_counts_cache_hits(clock, mocked):
    register_fixture(mocked, "deepseek/json_mode")
    s = strategy(clock, "deepseek")
    out = await s.decide(context())
    await s.aclose()

    assert out.valid and len(out.decision.actions) == 2
    assert (out.input_tokens, out.cache_read_tokens) == (3405 - 3328, 3328)
    assert out.request_id == "5f1d7c9e-2a4b-4e6f-9c1d-8b7a6e5f4d3c"  # no x-request-id: body id
    body = sent_requests(mocked)[0]["json"]
    assert body["response_format"] == {"type": "json_object"}
    assert "json" in body["messages"][0]["content"].lower()  # JSON mode needs the word


async def test_json_in_a_fenced_block_with_prose_is_accepted(clock, mocked):
    register_fixture(mocked, "deepseek/fenced_json")
    s = strategy(clock, "deepseek")
    out = await s.decide(context())
    await s.aclose()

    assert out.valid
    assert out.decision.actions[0].symbol == "BTCUSDT"
    assert out.raw_answer.startswith("Based on the 15m and 4h trend")


async def test_full_width_punctuation_is_read_but_numbers_as_strings_are_refused(clock, mocked):
    register_fixture(mocked, "deepseek/fullwidth_strings")
    s = strategy(clock, "deepseek")
    out = await s.decide(context())
    await s.aclose()

    # The JSON is found through the full-width punctuation; the schema then judges it.
    assert not out.valid and out.decision.actions == ()
    assert out.error == ("actions.0.symbol: Input should be 'BTCUSDT', 'ETHUSDT' or 'SOLUSDT'"
                         " (got 'BTC/USDT')")


async def test_deepseek_reasoning_content_is_kept_but_not_parsed(clock, mocked):
    register_fixture(mocked, "deepseek/reasoning")
    s = strategy(clock, "deepseek", model="deepseek-reasoner")
    out = await s.decide(context())
    await s.aclose()

    # The answer (not the reasoning) is judged: a number written as a string is refused.
    assert not out.valid
    assert out.error == "actions.0.size_usdt: must be a JSON number, not str (got '2000')"
    assert out.raw_answer.startswith("<reasoning>\nThe user wants a JSON decision.")


async def test_invalid_json_becomes_hold_with_the_reason(clock, mocked):
    register_fixture(mocked, "deepseek/invalid_json")
    s = strategy(clock, "deepseek")
    out = await s.decide(context())
    await s.aclose()

    assert not out.valid
    assert out.decision.actions == ()
    assert out.error.startswith("invalid JSON: Expecting property name enclosed in double quotes")
    assert out.raw_answer == load_fixture("deepseek/invalid_json")["response"]["body"][
        "choices"][0]["message"]["content"]
    assert out.output_tokens == 201  # an invalid answer still costs money


async def test_unknown_symbol_makes_the_answer_invalid(clock, mocked):
    register_fixture(mocked, "deepseek/unknown_symbol")
    s = strategy(clock, "deepseek")
    out = await s.decide(context())
    await s.aclose()

    assert not out.valid and out.decision.actions == ()
    assert out.error == ("actions.0.symbol: Input should be 'BTCUSDT', 'ETHUSDT' or 'SOLUSDT'"
                         " (got 'PEPEUSDT')")


@pytest.mark.parametrize(("provider", "fixture", "stop"), [
    ("anthropic", "anthropic/truncated", "max_tokens"),
    ("openai", "openai/truncated_length", "length"),
])
async def test_a_truncated_answer_becomes_hold(clock, mocked, provider, fixture, stop):
    register_fixture(mocked, fixture)
    s = strategy(clock, provider)
    out = await s.decide(context())
    await s.aclose()

    assert not out.valid and out.decision.actions == ()
    assert out.error == f"truncated: stop_reason={stop} at max_tokens=1500"


@pytest.mark.parametrize(("provider", "fixture_429", "fixture_ok"), [
    ("anthropic", "anthropic/rate_limited_429", "anthropic/tool_call"),
    ("openai", "openai/rate_limited_429", "openai/json_schema"),
])
async def test_429_with_retry_after_is_retried_then_succeeds(clock, mocked, provider,
                                                             fixture_429, fixture_ok):
    # The recorded retry-after (seconds) is shortened so the SDK's real sleep stays tiny.
    register_fixture(mocked, fixture_429, headers={"retry-after-ms": "1", "retry-after": "0"})
    register_fixture(mocked, fixture_ok)
    s = strategy(clock, provider, max_retries=2)
    out = await s.decide(context())
    await s.aclose()

    assert out.valid
    requests = sent_requests(mocked)
    assert len(requests) == 2
    assert [r["headers"].get("x-stainless-retry-count") for r in requests] == ["0", "1"]


async def test_retry_after_beyond_the_deadline_gives_up_at_once(clock, mocked):
    register_fixture(mocked, "anthropic/rate_limited_429")  # retry-after: 17
    s = strategy(clock, "anthropic", max_retries=3, deadline=10)
    out = await s.decide(context())
    await s.aclose()

    assert not out.valid
    assert out.error.startswith("http 429 rate_limit_error: This request would exceed")
    assert out.error.endswith("retry-after 17s exceeds the 10.0s left before the deadline")
    assert len(sent_requests(mocked)) == 1


@pytest.mark.parametrize(("provider", "fixture", "reason"), [
    ("anthropic", "anthropic/server_error_500",
     "http 500 api_error: Internal server error (request_id=req_011CVb1nP2Xd9Wk4Rm6Tz3Cq)"),
    ("openai", "openai/server_error_500",
     "http 500 server_error: The server had an error while processing your request. Sorry about"
     " that! (request_id=req_9a1c3e5f7b2d4f6a8c1e3a5c7e9b2d4f)"),
    ("anthropic", "anthropic/overloaded_529",
     "http 529 overloaded_error: Overloaded (request_id=req_011CVb1nH8Zq3Lc6Vt1Bw7Xm)"),
])
async def test_server_errors_become_hold_with_the_exact_reason(clock, mocked, provider, fixture,
                                                               reason):
    register_fixture(mocked, fixture)
    s = strategy(clock, provider, max_retries=0)
    out = await s.decide(context())
    await s.aclose()

    assert not out.valid and out.decision.actions == ()
    assert out.error == reason
    assert out.raw_answer == ""


async def test_anthropic_529_overloaded_is_retried_by_the_sdk(clock, mocked):
    register_fixture(mocked, "anthropic/overloaded_529", headers={"retry-after-ms": "1"})
    register_fixture(mocked, "anthropic/tool_call")
    s = strategy(clock, "anthropic", max_retries=1)
    out = await s.decide(context())
    await s.aclose()

    assert out.valid
    assert len(sent_requests(mocked)) == 2


async def test_an_sdk_timeout_becomes_hold(clock, mocked):
    # What aiohttp raises when the SDK's read timeout expires.
    mocked.post("https://api.openai.com/v1/chat/completions",
                exception=aiohttp.SocketTimeoutError("Timeout on reading data from socket"))
    s = strategy(clock, "openai", max_retries=0)
    out = await s.decide(context())
    await s.aclose()

    assert not out.valid
    assert out.error == "timeout: the provider did not answer in time (SDK timeout)"


async def test_temperature_is_not_sent_to_models_that_reject_it(clock, mocked):
    register_fixture(mocked, "anthropic/tool_call")
    s = strategy(clock, "anthropic", omit_temperature=("claude-sonnet-4-6",))
    await s.decide(context())
    await s.aclose()

    assert "temperature" not in sent_requests(mocked)[0]["json"]


async def test_a_model_without_a_price_costs_zero_and_warns_once(clock, mocked):
    from structlog.testing import capture_logs

    register_fixture(mocked, "openai/json_schema", repeat=True)
    s = strategy(clock, "openai", model="gpt-4o-mini")
    with capture_logs() as logs:
        first = await s.decide(context())
        await s.decide(context())
    await s.aclose()

    assert first.cost_usd == 0.0 and first.output_tokens == 168
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["llm.price_unknown"]
