"""Serve the fake Binance until Ctrl-C: `python -m engine.market.fakebinance [rest_port [ws_port]]`.

Prints the REST and websocket URLs to put in settings.toml (`feed.futures_rest_url`,
`feed.futures_ws_url`); the websocket streams a synthetic market in real time. A port left out
(or 0) is a free one.
"""

from __future__ import annotations

import asyncio
import sys

from engine.market.fakebinance.server import FakeBinance, synthetic_market


async def serve(rest_port: int, ws_port: int) -> None:
    """Serve until cancelled."""
    fake = FakeBinance(market=synthetic_market())
    await fake.start(rest_port, ws_port)
    try:
        print(f"fake Binance USD-M: REST {fake.rest_url}  websocket {fake.ws_url}", flush=True)
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    """Parse the ports and serve until Ctrl-C."""
    ports = [int(a) for a in (sys.argv[1:] if argv is None else argv)][:2]
    rest_port, ws_port = (*ports, 0, 0)[:2]
    try:
        asyncio.run(serve(rest_port, ws_port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
