"""Any model: a provider declared in settings, against a local OpenAI-compatible server.

The server (aiohttp on 127.0.0.1, written here in the shape of vLLM's and Ollama's answers)
refuses `response_format: json_schema` and tool calls, as many OpenAI-compatible endpoints do,
and takes JSON mode. The client learns the mode from the refusals, logs it, keeps it, records it
with each call, and a replay of the recording asks in the same modes without a key.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from engine.clock import LiveClock, SimClock
from engine.market.recording import FrameRecorder, read_session
from engine.settings import Secrets, SettingsError, load_settings
from engine.traders.fixtures import context, load_fixture
from engine.traders.kinds import OpenAICompatibleClient
from engine.traders.session import LLMSession, Tape
from strategies.registry import build_strategies

# The exact form issue 23 asks to work, unchanged.
EXAMPLE = """\
[llm.providers.qwen]
kind = "openai_compatible"
base_url = "http://127.0.0.1:8000/v1"
api_key_env = "QWEN_API_KEY"
[llm.prices."qwen3-max"]
input = 1.2
output = 6.0
[[traders]]
name = "qwen"
strategy = "llm"
provider = "qwen"
model = "qwen3-max"
starting_capital = 10000
"""
ANSWERED_MODEL = "qwen3-max-2025-09-23"  # the dated snapshot the server says it ran


class CompatibleServer:
    """POST /v1/chat/completions; refuses the response formats and tools it does not take."""

    def __init__(self, refuses: tuple[str, ...] = ("json_schema", "tool")) -> None:
        self.refuses = refuses
        self.modes: list[str] = []  # the mode of every request, in order
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> CompatibleServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        fmt = (body.get("response_format") or {}).get("type")
        mode = "tool" if body.get("tools") else fmt or "text"
        self.modes.append(mode)
        if mode in self.refuses:
            what = ("response_format json_schema" if mode == "json_schema"
                    else "tools / tool_choice")
            return web.json_response(
                {"object": "error", "message": f"{what} is not supported by this server",
                 "type": "BadRequestError", "param": None, "code": 400}, status=400)
        out = copy.deepcopy(load_fixture("openai/json_schema")["response"]["body"])
        out["id"] = f"chatcmpl-{len(self.modes)}"
        out["model"] = ANSWERED_MODEL
        answer = {"actions": [{"symbol": "BTCUSDT", "action": "open_long", "size_usdt": 500,
                               "leverage": 2, "stop_loss": None, "take_profit": None,
                               "confidence": 0.6, "reason": f"asked in {mode}"}]}
        out["choices"][0]["message"]["content"] = json.dumps(answer)
        return web.json_response(out, headers={"x-request-id": f"req-{len(self.modes)}"})


def settings_file(tmp_path: Path, port: int = 8000, extra: str = "") -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(EXAMPLE.replace("127.0.0.1:8000", f"127.0.0.1:{port}") + extra)
    return path


SECRETS = Secrets.from_env({"QWEN_API_KEY": "sk-local-qwen"})


def test_the_exact_example_loads_and_builds_an_openai_compatible_trader(tmp_path):
    settings = load_settings(settings_file(tmp_path))
    qwen = settings.llm.providers["qwen"]
    assert (qwen.kind, qwen.base_url, qwen.api_key_env) == (
        "openai_compatible", "http://127.0.0.1:8000/v1", "QWEN_API_KEY")
    assert settings.llm.prices["qwen3-max"].input == 1.2
    # the three native providers are still there, inferred
    assert settings.llm.providers["deepseek"].kind == "openai_compatible"
    assert settings.llm.providers["anthropic"].api_key_env == "ANTHROPIC_API_KEY"
    strategies = build_strategies(settings, SECRETS, SimClock())
    client = strategies["qwen"]._client  # type: ignore[attr-defined]
    assert isinstance(client, OpenAICompatibleClient) and client.live
    assert client.provider == "qwen" and client.mode == "json_schema"


def test_a_trader_without_its_key_is_left_out_naming_the_variable(tmp_path):
    settings = load_settings(settings_file(tmp_path))
    with capture_logs() as logs:
        assert build_strategies(settings, Secrets.from_env({}), SimClock()) == {}
    assert {"event": "trader.disabled", "trader": "qwen", "reason": "missing_api_key",
            "env": "QWEN_API_KEY", "log_level": "warning"} in logs


@pytest.mark.parametrize(("extra", "message"), [
    ('[[traders]]\nname = "x"\nstrategy = "llm"\nprovider = "qwen"\nmodel = "gpt-99-turbo"\n',
     "trader 'x': model 'gpt-99-turbo' is not in the models table; add "
     '[llm.prices."gpt-99-turbo"] with input and output (USD per million tokens)'),
    ('[[traders]]\nname = "x"\nstrategy = "llm"\nprovider = "grok"\nmodel = "qwen3-max"\n',
     "trader 'x': unknown provider 'grok'; declare [llm.providers.grok] with kind and base_url"),
    ('[llm.providers.kimi]\nbase_url = "http://127.0.0.1:9/v1"\n',
     "provider 'kimi' needs kind (anthropic, openai or openai_compatible) and base_url"),
    ('[llm.providers.kimi]\nkind = "anthropic"\nbase_url = "http://h"\n'
     'structured_output = "json_schema"\n',
     "provider 'kimi': structured_output 'json_schema' is not one of auto, tool, text for "
     "anthropic"),
    ('[llm.prices."m"]\ninput = 1\noutput = 2\ntraining_cutoff = "last spring"\n',
     'expected a date "YYYY-MM-DD" or "unknown"'),
    # a key in OLLAMA_KEY would never be read (only *_API_KEY variables are): refused, not lost
    ('[llm.providers.ollama]\nkind = "openai_compatible"\nbase_url = "http://h/v1"\n'
     'api_key_env = "OLLAMA_KEY"\n',
     "bad value for 'llm.providers.ollama.api_key_env': 'OLLAMA_KEY'; expected an environment "
     "variable name ending in _API_KEY"),
])
def test_settings_errors_name_what_to_add(tmp_path, extra, message):
    with pytest.raises(SettingsError) as err:
        load_settings(settings_file(tmp_path, extra=extra))
    assert message in str(err.value)


def test_the_models_table_reads_a_cutoff_as_a_date_or_unknown(tmp_path):
    extra = ('[llm.prices."m1"]\ninput = 1\noutput = 2\ntraining_cutoff = "2025-04-30"\n'
             'context_window = 262144\nstructured_output = ["json_object", "text"]\n'
             '[llm.prices."m2"]\ninput = 1\noutput = 2\ntraining_cutoff = "unknown"\n')
    prices = load_settings(settings_file(tmp_path, extra=extra)).llm.prices
    assert str(prices["m1"].training_cutoff) == "2025-04-30" and prices["m1"].training_cutoff_known
    assert prices["m1"].context_window == 262144
    assert prices["m2"].training_cutoff is None and not prices["m2"].training_cutoff_known
    assert prices["qwen3-max"].training_cutoff is None  # not given
    assert prices["gpt-4o"].context_window == 128_000  # a shipped entry stays


async def test_a_server_refusing_json_schema_teaches_the_mode_once(tmp_path):
    async with CompatibleServer() as server:
        settings = load_settings(settings_file(tmp_path, server.port))
        strategy = build_strategies(settings, SECRETS, LiveClock())["qwen"]
        with capture_logs() as logs:
            first = await strategy.decide(context("qwen"))
            second = await strategy.decide(context("qwen", cycle_id="c-2"))
        await strategy.aclose()  # type: ignore[attr-defined]
    assert server.modes == ["json_schema", "tool", "json_object", "json_object"]
    learned = [e for e in logs if e["event"] == "llm.output_mode_learned"]
    assert [(e["refused"], e["mode"]) for e in learned] == [("json_schema", "tool"),
                                                            ("tool", "json_object")]
    assert "response_format json_schema is not supported" in learned[0]["reason"]
    for out in (first, second):
        assert out.valid, out.error
        assert out.decision.actions[0].reason == "asked in json_object"
        assert out.model == "qwen3-max" and out.model_version == ANSWERED_MODEL
        assert out.cost_usd > 0  # priced from the models table entry


async def test_a_fixed_mode_is_the_only_one_asked(tmp_path):
    extra = ""
    async with CompatibleServer() as server:
        path = settings_file(tmp_path, server.port, extra)
        path.write_text(path.read_text().replace(
            'api_key_env = "QWEN_API_KEY"\n',
            'api_key_env = "QWEN_API_KEY"\nstructured_output = "json_schema"\n'))
        strategy = build_strategies(load_settings(path), SECRETS, LiveClock())["qwen"]
        out = await strategy.decide(context("qwen"))
        await strategy.aclose()  # type: ignore[attr-defined]
    assert server.modes == ["json_schema"]
    assert not out.valid and out.error.startswith("http 400")


async def test_the_learned_mode_is_recorded_and_a_replay_asks_the_same_way(tmp_path):
    recording = tmp_path / "session.jsonl"
    async with CompatibleServer() as server:
        settings = load_settings(settings_file(tmp_path, server.port))
        recorder = FrameRecorder(recording)
        session = LLMSession(LiveClock(), recorder=recorder, prices=settings.llm.prices)
        strategy = build_strategies(settings, SECRETS, LiveClock(), session=session)["qwen"]
        live = await strategy.decide(context("qwen"))
        await strategy.aclose()  # type: ignore[attr-defined]
        recorder.close()
    records, _ = read_session(recording)
    assert [r["params"].get("output") for r in records] == [None, "tool", "json_object"]
    assert [(r["response"] or {}).get("status") for r in records] == [400, 400, 200]

    session = LLMSession(LiveClock(), tape=Tape(records))
    strategy = build_strategies(settings, Secrets.from_env({}), LiveClock(), session=session,
                                live_calls=False)["qwen"]
    replayed = await strategy.decide(context("qwen"))
    await strategy.aclose()  # type: ignore[attr-defined]
    assert session.counts["replay"] == 3 and session.counts["live"] == 0
    assert (replayed.decision, replayed.valid, replayed.model_version) == (
        live.decision, True, ANSWERED_MODEL)




async def test_a_trader_new_to_a_replay_holds_with_not_recorded(tmp_path):
    settings = load_settings(settings_file(tmp_path))
    session = LLMSession(LiveClock(), tape=Tape([]))  # a recording without this trader
    with capture_logs() as logs:
        strategies = build_strategies(settings, SECRETS, LiveClock(), session=session,
                                      live_calls=False)
    assert "qwen" in strategies  # kept, not disabled
    assert any(e["event"] == "trader.not_in_recording" and e["trader"] == "qwen" for e in logs)
    out = await strategies["qwen"].decide(context("qwen"))
    await strategies["qwen"].aclose()  # type: ignore[attr-defined]
    assert not out.valid and out.error.startswith("not_recorded: ")
    assert session.counts["not_recorded"] == 1


async def test_anthropics_request_id_is_taken_from_an_error_body():
    from aioresponses import aioresponses

    from engine.traders.fixtures import llm_settings
    from engine.traders.kinds import make_client
    from engine.traders.prompt import build_prompt
    from engine.traders.providers import LLMError

    settings = llm_settings(max_retries=0)
    client = make_client("anthropic", settings.providers["anthropic"], "sk-test", LiveClock())
    body = {"type": "error", "request_id": "req_from_body_42",
            "error": {"type": "invalid_request_error", "message": "max_tokens too large"}}
    with aioresponses() as mocked:
        mocked.post("https://api.anthropic.com/v1/messages", status=400, payload=body)
        with pytest.raises(LLMError) as err:
            await client.complete(build_prompt(context()), model="claude-sonnet-4-6",
                                  temperature=0.2, max_tokens=100, deadline_seconds=10)
    await client.aclose()
    assert "(request_id=req_from_body_42)" in str(err.value)
    assert "invalid_request_error: max_tokens too large" in str(err.value)
