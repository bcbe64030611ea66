"""Fixtures of the store's whole-engine tests: a local model that always trades."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.llm_server import TradingModel, serve_model


@pytest.fixture
async def trading_model() -> AsyncIterator[tuple[str, TradingModel]]:
    """A chat-completions server on 127.0.0.1 whose every answer trades: (URL, model)."""
    model = TradingModel()
    async with serve_model(model) as url:
        yield url, model
