"""One LLM call recorded into a session file, then replayed from it without a key.

Every outcome — an answer, a truncated one, an HTTP error, a retry-after past the deadline, a
connection error, an SDK timeout — replays through the SDK's own parsing into the same outcome,
with the recorded latency; nothing reaches the network. On a simulated clock the replayed answer
arrives its recorded latency after the request.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aioresponses import aioresponses

from engine.clock import LiveClock, SimClock
from engine.market.recording import FrameRecorder, read_session
from engine.traders.fixtures import context, llm_settings, register_fixture, trader
from engine.traders.kinds import make_client
from engine.traders.session import LLMSession, Tape
from strategies.llm import LLMStrategy

MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o", "deepseek": "deepseek-chat"}
OPENAI_URL = "https://api.openai.com/v1/chat/completions"


def strategy(session: LLMSession, provider: str, key: str | None, *, deadline: float = 60,
             max_retries: int = 0) -> LLMStrategy:
    settings = llm_settings(max_retries=max_retries)
    client = make_client(provider, settings.providers[provider], key, session.clock,
                         session=session, trader="t1")
    return LLMStrategy(trader("t1", provider, MODELS[provider]), client, session.clock,
                       settings, deadline_seconds=deadline)


def fields(out):
    return (out.decision, out.raw_answer, out.valid, out.error, out.input_tokens,
            out.output_tokens, out.cache_read_tokens, out.cache_write_tokens, out.cost_usd,
            out.request_id, out.prompt_hash, out.latency_ms)


async def record_one(tmp_path, provider, serve, **kw):
    path = tmp_path / "session.jsonl"
    recorder = FrameRecorder(path)
    session = LLMSession(LiveClock(), recorder=recorder, prices=llm_settings().prices)
    s = strategy(session, provider, "sk-test-key", **kw)
    with aioresponses() as mocked:
        serve(mocked)
        live = await s.decide(context("t1"))
    await s.aclose()
    recorder.close()
    return path, live


CASES = {
    "answer": ("anthropic", lambda m: register_fixture(m, "anthropic/tool_call"), {}),
    "openai": ("openai", lambda m: register_fixture(m, "openai/json_schema"), {}),
    "reasoning": ("deepseek", lambda m: register_fixture(m, "deepseek/reasoning"), {}),
    "truncated": ("anthropic", lambda m: register_fixture(m, "anthropic/truncated"), {}),
    "http_500": ("openai", lambda m: register_fixture(m, "openai/server_error_500"), {}),
    "gave_up": ("anthropic", lambda m: register_fixture(m, "anthropic/rate_limited_429"),
                {"deadline": 10, "max_retries": 3}),
    # (the SDKs' aiohttp transport reports most aiohttp client errors as timeouts)
    "connection": ("openai", lambda m: m.post(OPENAI_URL, exception=ConnectionResetError(
        "Connection reset by peer")), {}),
    "timeout": ("openai", lambda m: m.post(OPENAI_URL, exception=aiohttp.SocketTimeoutError(
        "Timeout on reading data from socket")), {}),
}


@pytest.mark.parametrize("case", CASES)
async def test_a_recorded_call_replays_to_the_same_outcome_without_a_key(tmp_path, case):
    provider, serve, kw = CASES[case]
    path, live = await record_one(tmp_path, provider, serve, **kw)
    records, _ = read_session(path)
    [record] = records
    assert record["trader"] == "t1" and record["prompt_hash"] == live.prompt_hash
    assert live.latency_ms == record["latency_ms"]

    session = LLMSession(LiveClock(), tape=Tape(records))
    s = strategy(session, provider, None, **kw)
    with aioresponses() as mocked:  # nothing registered: any request would fail loudly
        replayed = await s.decide(context("t1"))
        assert mocked.requests == {}
    await s.aclose()
    assert fields(replayed) == fields(live)
    assert session.counts == {"live": 0, "replay": 1, "cache": 0, "not_recorded": 0}
    if case == "gave_up":
        assert replayed.error.endswith("retry-after 17s exceeds the 10.0s left before the deadline")
    if case in ("connection", "timeout"):
        assert record["response"] is None and record["error"]["kind"] == case
        assert replayed.error.startswith(case)


async def test_a_replayed_answer_arrives_its_latency_later_on_the_simulated_clock(tmp_path):
    path, live = await record_one(tmp_path, "anthropic",
                                  lambda m: register_fixture(m, "anthropic/tool_call"))
    records, _ = read_session(path)
    records[0]["latency_ms"] = 1500.0
    clock = SimClock()
    session = LLMSession(clock, tape=Tape(records))
    s = strategy(session, "anthropic", None)
    start = clock.time()
    task = asyncio.create_task(s.decide(context("t1")))
    await clock.advance(1.499)
    assert not task.done()
    await clock.advance(0.002)
    # The answer is due: the task finishes without the simulated clock moving again (the SDK's
    # thread hop may take many loop turns on a loaded machine); the wall timeout only bounds it.
    out = await asyncio.wait_for(task, timeout=30)
    await s.aclose()
    assert out.valid and out.latency_ms == 1500.0 and out.raw_answer == live.raw_answer
    assert clock.time() - start == pytest.approx(1.501)


async def test_an_unrecorded_prompt_holds_with_not_recorded(tmp_path):
    path, _ = await record_one(tmp_path, "anthropic",
                               lambda m: register_fixture(m, "anthropic/tool_call"))
    session = LLMSession(LiveClock(), tape=Tape(read_session(path)[0]))
    s = strategy(session, "anthropic", None)
    out = await s.decide(context("t1", cycle_id="c-other"))
    await s.aclose()
    assert not out.valid and out.error.startswith("not_recorded: no recorded answer for prompt")
    assert session.counts["not_recorded"] == 1


def test_read_session_finds_every_llm_and_cycle_line_between_market_lines(tmp_path):
    path = tmp_path / "big.jsonl.gz"
    rec = FrameRecorder(path)
    raw = '{"stream":"btcusdt@bookTicker","data":{"note":"\\"llm\\": not a key"}}' + "x" * 300
    for i in range(12_000):  # several megabyte blocks of market lines
        rec.write(raw, float(i))
        if i % 997 == 0:
            rec.write_record("cycle", {"cycle_id": f"c-{i}"}, float(i))
            rec.write_record("llm", {"trader": "t1", "n": i}, float(i) + 0.5)
    rec.close()
    llm, cycles = read_session(path)
    expected = [i for i in range(12_000) if i % 997 == 0]
    assert [r["n"] for r in llm] == expected
    assert [r["t"] for r in llm] == [i + 0.5 for i in expected]
    assert cycles == [(float(i), f"c-{i}") for i in expected]
