"""The mark prices the broker values positions at: the mark stream's, else the book's.

`Marks` is the one place the paper accounts read prices from: the newest MarkPrice per symbol
(set by the trigger watch), else the price book's reference price (mark, mid or last), else the
position's entry price. `QuoteSource` is what it needs of the book: `quote(symbol)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from engine.paper.accounts import Account
from engine.paper.risk import Prices


class QuoteLike(Protocol):
    """One symbol's prices as the broker reads them (`engine.market.book.Quote`)."""

    @property
    def bid(self) -> float: ...
    @property
    def ask(self) -> float: ...
    @property
    def mark(self) -> float: ...
    @property
    def mid(self) -> float: ...
    @property
    def price(self) -> float | None: ...

    def age(self, now: float) -> float: ...


class QuoteSource(Protocol):
    """A price book: the newest quote of a symbol, or None before its first price."""

    def quote(self, symbol: str) -> QuoteLike | None: ...


class Marks:
    """Mark prices per symbol, falling back to the book's reference price."""

    __slots__ = ("_marks", "book")

    def __init__(self, book: QuoteSource) -> None:
        self.book = book
        self._marks: dict[str, float] = {}

    def __contains__(self, symbol: object) -> bool:
        """Return True once a mark was set for `symbol` (a mark stream or `refresh`)."""
        return symbol in self._marks

    def set(self, symbol: str, mark: float) -> None:
        """Take `mark` as `symbol`'s mark price (from a MarkPrice)."""
        self._marks[symbol] = mark

    def clear(self) -> None:
        """Forget every mark: values come from the book until marks are set again."""
        self._marks.clear()

    def copy_from(self, other: Marks) -> None:
        """Take every mark `other` holds (a restored broker valued like the one it copies)."""
        self._marks.update(other._marks)

    def get(self, symbol: str, fallback: float) -> float:
        """Return `symbol`'s mark, else the book's reference price, else `fallback`."""
        mark = self._marks.get(symbol)
        if mark is not None:
            return mark
        q = self.book.quote(symbol)
        price = q.price if q is not None else None
        return price if price else fallback

    def for_account(self, acc: Account) -> dict[str, float]:
        """Return the mark of every symbol `acc` holds (entry price when none is known)."""
        return {s: self.get(s, p.entry_price) for s, p in acc.positions.items()}

    def refresh(self, symbols: Iterable[str]) -> None:
        """Take the book's reference price as the mark of each of `symbols` that has one."""
        for s in symbols:
            q = self.book.quote(s)
            price = q.price if q is not None else None
            if price:
                self._marks[s] = price

    def prices(self, symbol: str) -> Prices | None:
        """Return the executable bid/ask and the mark of `symbol`, or None without a book."""
        q = self.book.quote(symbol)
        if q is None or not (q.bid > 0 and q.ask > 0):
            return None
        return Prices(q.bid, q.ask, q.mark if q.mark > 0 else q.mid)

    def book_has_mark(self, symbol: str) -> bool:
        """Return True when the book holds a mark price for `symbol` (a futures symbol)."""
        q = self.book.quote(symbol)
        return q is not None and q.mark > 0
