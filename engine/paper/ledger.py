"""The paper accounts by trader, and each symbol's filters (step, tick, minimum, margin tiers).

`Ledger` is the broker's one table of accounts; every part of the broker that reads or changes
an account is handed the same `Ledger`. `SymbolFilters` answers a symbol's filters: those loaded
from exchangeInfo when set, else the settings'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.paper.accounts import Account
from engine.settings import BrokerSettings, SymbolFilter


class Ledger(dict[str, Account]):
    """Every trader's account, by trader name."""

    def account(self, trader: str) -> Account:
        """Return `trader`'s account; KeyError names the trader when it has none."""
        acc = self.get(trader)
        if acc is None:
            raise KeyError(f"no account for trader {trader!r}: open_account or restore it first")
        return acc


class SymbolFilters:
    """Per-symbol order filters: exchangeInfo's when loaded, else the broker settings'."""

    __slots__ = ("_loaded", "settings")

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._loaded: dict[str, SymbolFilter] = {}

    def filter_for(self, symbol: str) -> SymbolFilter:
        """Return the symbol's filters: exchangeInfo's when set, else the settings'."""
        return self._loaded.get(symbol) or self.settings.filter_for(symbol)

    def set(self, filters: Mapping[str, SymbolFilter | Mapping[str, Any]]) -> None:
        """Use these per-symbol filters (e.g. from exchangeInfo) instead of the settings'."""
        for symbol, f in filters.items():
            base = self.settings.filter_for(symbol).model_dump()
            data = f.model_dump() if isinstance(f, SymbolFilter) else dict(f)
            self._loaded[symbol] = SymbolFilter(**{**base, **data})

    def loaded(self) -> frozenset[str]:
        """Return the symbols whose filters were loaded (they are tradable symbols)."""
        return frozenset(self._loaded)
