"""arena: LLMs trading crypto side by side on paper accounts, in one asyncio loop.

The packages follow the data: `market` (Binance frames → prices and candles) → `paper` (accounts,
risk, broker) → `traders` (LLM providers, prompt, the decision step; with `strategies/`) →
`store` (Postgres) → `web` (control API and live page) → `app` (builds and supervises it all).
The modules at this level are the core every layer uses: clock, bus, events, decision values,
settings, logging, metrics, scheduler, the generic trading cycle. A package imports only from
its own layer or a lower one (tests/test_layers.py checks it).
"""

__version__ = "0.1.0"
