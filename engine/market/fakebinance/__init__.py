"""One fake Binance USD-M for tests, benchmarks and the demo: REST and websocket on 127.0.0.1.

`FakeBinance` (server.py) answers the REST endpoints and the combined-stream websocket the
engine uses, in Binance's shapes (synthetic.py: a seeded price path, written by hand from the
documented shapes and checked against them in tests/market/test_fakebinance_shapes.py), and
injects the faults of `Faults` (faults.py) on demand. Run it alone with
`python -m engine.market.fakebinance [rest_port [ws_port]]`.
"""

from engine.market.fakebinance.faults import Faults as Faults
from engine.market.fakebinance.server import CLOSE as CLOSE
from engine.market.fakebinance.server import DROP as DROP
from engine.market.fakebinance.server import GARBAGE as GARBAGE
from engine.market.fakebinance.server import FakeBinance as FakeBinance
from engine.market.fakebinance.server import MarketSource as MarketSource
from engine.market.fakebinance.server import synthetic_market as synthetic_market
