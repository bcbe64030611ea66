"""Market data: Binance frames, the websocket feed, price book, candles, indicators, snapshots,
Binance REST, recordings and their replay, and the market generator.

May import: the core (`engine.*` top-level modules) only.
"""
