"""A provider's 401 that echoes the key it was given: redacted where the error is made, so the
decision, its event and row, the fixture recording and the session record never hold the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
from aioresponses import aioresponses

from engine import redact
from engine.clock import LiveClock
from engine.market.recording import FrameRecorder
from engine.traders.fixtures import context, llm_settings, trader
from engine.traders.kinds import make_client
from engine.traders.providers import FixtureRecorder
from engine.traders.session import LLMSession
from strategies.llm import LLMStrategy

KEYS = {"anthropic": "sk-ant-api03-EchoedBack0123456789abcdefXYZ",
        "openai": "sk-proj-EchoedBack0123456789abcdefXYZ",
        "deepseek": "sk-EchoedBack0123456789abcdef0123"}
Provider = Literal["anthropic", "openai", "deepseek"]
MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o", "deepseek": "deepseek-chat"}
URLS = {"anthropic": "https://api.anthropic.com/v1/messages",
        "openai": "https://api.openai.com/v1/chat/completions",
        "deepseek": "https://api.deepseek.com/chat/completions"}


def echo_401(provider: str) -> dict[str, Any]:
    """The 401 body each provider sends for a wrong key, echoing it as OpenAI does."""
    message = f"Incorrect API key provided: {KEYS[provider]}."
    if provider == "anthropic":
        return {"type": "error", "error": {"type": "authentication_error", "message": message}}
    return {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": "invalid_api_key"}}


@pytest.fixture(autouse=True)
def _unregistered() -> None:
    redact.clear_secrets()  # the rules alone must catch the echoed key


@pytest.mark.parametrize("provider", sorted(KEYS))
async def test_an_echoed_key_reaches_no_decision_recording_or_session_record(
        provider: Provider, tmp_path: Path) -> None:
    clock = LiveClock()
    settings = llm_settings(max_retries=0)
    recorder = FixtureRecorder(tmp_path / "fixtures", "t", provider, clock)
    recording = FrameRecorder(tmp_path / "session.jsonl")  # what --record writes
    session = LLMSession(clock, recorder=recording)
    client = make_client(provider, settings.providers[provider], KEYS[provider], clock,
                         recorder=recorder, session=session, trader="t")
    strategy = LLMStrategy(trader("t", provider, MODELS[provider]), client, clock, settings,
                           deadline_seconds=60)
    with aioresponses() as mocked:
        mocked.post(URLS[provider], status=401, payload=echo_401(provider),
                    headers={"x-request-id": "req_local_401"})
        out = await strategy.decide(context())
    await strategy.aclose()
    recording.close()

    assert not out.valid
    assert out.error is not None and out.error.startswith("http 401 ")
    assert "Incorrect API key provided: ***." in out.error
    stored = [p.read_text() for p in recorder.saved]
    stored.append((tmp_path / "session.jsonl").read_text())
    assert len(stored) == 2 and all(KEYS[provider] not in s for s in stored)
    assert all("Incorrect API key provided: ***." in s for s in stored)
    assert KEYS[provider] not in repr(out)  # every field the event and the row are made of
