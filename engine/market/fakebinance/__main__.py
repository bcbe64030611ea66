"""Serve the fake Binance until Ctrl-C: `python -m engine.market.fakebinance`.

Prints the REST and websocket URLs to put in settings.toml (`feed.futures_rest_url`,
`feed.futures_ws_url`); the websocket streams a synthetic market in real time.
"""

from __future__ import annotations

import asyncio

from engine.market.fakebinance.server import FakeBinance, synthetic_market


async def serve() -> None:
    """Serve until cancelled."""
    async with FakeBinance(market=synthetic_market()) as fake:
        print(f"fake Binance USD-M: REST {fake.rest_url}  websocket {fake.ws_url}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
