"""Regenerate the demo candle file and the Binance recordings used by the source tests.

Run ``python tests/data/make_candles.py`` from the repository root. It writes

- ``examples/data/candles/BINANCE/BTC-USDT/1h.csv``: the seed week (2025-01-01 00:00 to
  2025-01-07 23:00 UTC, 168 hourly candles) of a BTC/USDT-like market, 2 price and 5 volume
  decimals, ISO timestamps;
- ``tests/data/ccxt/binance/``: responses in Binance's wire format (``GET /api/v3/exchangeInfo``
  trimmed to BTCUSDT, ``GET /api/v3/klines`` pages) and ``index.json`` mapping each request
  (method, path, query) to its response file.

The machine these tests run on has no network, so the responses are not captured live: they
are built here, field for field in the format Binance documents, from the same deterministic
price path as the demo file (anchored on BTC/USDT's real daily closes of that week). Output is
byte-for-byte reproducible.
"""

from __future__ import annotations

import json
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CSV = ROOT / "examples" / "data" / "candles" / "BINANCE" / "BTC-USDT" / "1h.csv"
RECORDINGS = ROOT / "tests" / "data" / "ccxt" / "binance"

HOUR_MS = 3_600_000
WEEK_START_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC
FIRST_OPEN = 93576.00
# Daily closes (23:00 candle) that the hourly path passes through.
DAILY_CLOSES = [94591.79, 96984.79, 98174.18, 98236.23, 98314.96, 102078.09, 96922.71]

CENT = Decimal("0.01")
STEP = Decimal("0.00001")


def hourly_week() -> list[dict[str, Decimal | int]]:
    """168 hourly candles: a Brownian bridge in log price between the daily anchors."""
    rng = np.random.default_rng(20250101)
    closes: list[float] = []
    level = FIRST_OPEN
    for target in DAILY_CLOSES:
        steps = rng.normal(0.0, 0.0035, 24)
        walk = np.cumsum(steps)
        bridge = walk - np.arange(1, 25) / 24 * walk[-1]
        path = np.log(level) + np.arange(1, 25) / 24 * (np.log(target) - np.log(level)) + bridge
        closes.extend(np.exp(path).tolist())
        closes[-1] = target
        level = target
    candles = []
    previous_close = Decimal(f"{FIRST_OPEN:.2f}")
    for i, close_value in enumerate(closes):
        open_ = previous_close
        close = Decimal(repr(close_value)).quantize(CENT, ROUND_HALF_EVEN)
        wick_up, wick_down = abs(rng.normal(0, 0.0018)), abs(rng.normal(0, 0.0018))
        high = (max(open_, close) * Decimal(repr(1 + wick_up))).quantize(CENT, ROUND_CEILING)
        low = (min(open_, close) * Decimal(repr(1 - wick_down))).quantize(CENT, ROUND_FLOOR)
        volume = Decimal(repr(float(rng.lognormal(np.log(800), 0.45)))).quantize(STEP, ROUND_HALF_EVEN)
        buy = (volume * Decimal(repr(float(rng.uniform(0.38, 0.62))))).quantize(STEP, ROUND_HALF_EVEN)
        candles.append({
            "open_ms": WEEK_START_MS + i * HOUR_MS, "open": open_, "high": high, "low": low,
            "close": close, "volume": volume, "buy_vol": buy, "trades": int(rng.integers(40_000, 160_000)),
        })
        previous_close = close
    return candles


def write_example_csv(candles: list[dict[str, Decimal | int]]) -> None:
    EXAMPLE_CSV.parent.mkdir(parents=True, exist_ok=True)
    lines = ["timestamp,open,high,low,close,volume,buy_vol,sell_vol"]
    for c in candles:
        when = np.datetime64(int(c["open_ms"]), "ms").astype("datetime64[s]").item().strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"{when},{c['open']},{c['high']},{c['low']},{c['close']},{c['volume']},"
                     f"{c['buy_vol']},{c['volume'] - c['buy_vol']}")  # type: ignore[operator]
    EXAMPLE_CSV.write_text("\n".join(lines) + "\n", encoding="ascii")


def _f8(value: Decimal) -> str:
    return f"{value:.8f}"


def kline(c: dict[str, Decimal | int], period_ms: int = HOUR_MS) -> list[object]:
    """One candle in Binance's /api/v3/klines array form."""
    mid = (c["high"] + c["low"]) / 2  # type: ignore[operator]
    return [
        c["open_ms"], _f8(c["open"]), _f8(c["high"]), _f8(c["low"]), _f8(c["close"]),  # type: ignore[arg-type]
        _f8(c["volume"]), int(c["open_ms"]) + period_ms - 1,  # type: ignore[arg-type]
        _f8((c["volume"] * mid).quantize(Decimal("0.00000001"))), c["trades"],  # type: ignore[operator]
        _f8(c["buy_vol"]), _f8((c["buy_vol"] * mid).quantize(Decimal("0.00000001"))), "0",  # type: ignore[arg-type, operator]
    ]


def exchange_info() -> dict[str, object]:
    """``GET /api/v3/exchangeInfo`` trimmed to the BTCUSDT symbol."""
    return {
        "timezone": "UTC",
        "serverTime": 1736294400000,
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ],
        "exchangeFilters": [],
        "symbols": [{
            "symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "baseAssetPrecision": 8,
            "quoteAsset": "USDT", "quotePrecision": 8, "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True, "cancelReplaceAllowed": True, "amendAllowed": True, "pegInstructionsAllowed": True,
            "isSpotTradingAllowed": True, "isMarginTradingAllowed": True,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
                {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "76.54321000", "stepSize": "0.00000000"},
                {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
                 "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
                {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
                 "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
                {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
                 "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
            ],
            "permissions": [],
            "permissionSets": [["SPOT", "MARGIN", "TRD_GRP_004", "TRD_GRP_005", "TRD_GRP_006"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }],
    }


def write_recordings(candles: list[dict[str, Decimal | int]]) -> None:
    RECORDINGS.mkdir(parents=True, exist_ok=True)
    index: list[dict[str, object]] = []

    def record(name: str, path: str, query: dict[str, object], body: object, status: int = 200) -> None:
        (RECORDINGS / name).write_text(json.dumps(body, separators=(",", ":")) + "\n", encoding="ascii")
        index.append({"method": "GET", "path": path, "query": {k: str(v) for k, v in query.items()},
                      "status": status, "file": name})

    def klines(name: str, interval: str, start_ms: int, limit: int, rows: list[list[object]]) -> None:
        query = {"symbol": "BTCUSDT", "interval": interval, "startTime": start_ms, "limit": limit}
        record(name, "/api/v3/klines", query, rows)

    record("exchangeInfo.json", "/api/v3/exchangeInfo", {}, exchange_info())
    hourly = [kline(c) for c in candles]
    # The whole week in pages of 100 (the tests use page_limit=100): 100 + 68 candles.
    klines("klines_1h_page1.json", "1h", WEEK_START_MS, 100, hourly[:100])
    klines("klines_1h_page2.json", "1h", WEEK_START_MS + 100 * HOUR_MS, 68, hourly[100:])
    # The last day in one request with the default page limit.
    klines("klines_1h_day7.json", "1h", WEEK_START_MS + 144 * HOUR_MS, 24, hourly[144:])
    # Daily candles with a gap: asked for 3 days from Jan 1, Binance skips the missing Jan 2 and
    # returns Jan 4 as the third candle (past the end of the range).
    day_ms = 24 * HOUR_MS
    daily = []
    for day in (0, 2, 3):
        rows = candles[day * 24:(day + 1) * 24]
        volume = sum((r["volume"] for r in rows), Decimal(0))  # type: ignore[misc]
        buy = sum((r["buy_vol"] for r in rows), Decimal(0))  # type: ignore[misc]
        daily.append(kline({
            "open_ms": WEEK_START_MS + day * day_ms, "open": rows[0]["open"], "close": rows[-1]["close"],
            "high": max(r["high"] for r in rows), "low": min(r["low"] for r in rows),  # type: ignore[type-var]
            "volume": volume, "buy_vol": buy, "trades": sum(int(r["trades"]) for r in rows),
        }, day_ms))
    klines("klines_1d_gap.json", "1d", WEEK_START_MS, 3, daily)
    # The same gap seen at Jan 3 12:00, when the Jan 3 candle is still open: asked for the 2 closed
    # days from Jan 1, Binance returns Jan 1 and the open Jan 3 candle (its values so far).
    open_day = list(daily[1])
    open_day[4] = open_day[1]
    klines("klines_1d_open.json", "1d", WEEK_START_MS, 2, [daily[0], open_day])
    # 15m candles whose volumes carry 8 decimals, finer than the 0.00001 LOT_SIZE step.
    quarter_ms = 15 * 60_000
    fine = [
        [WEEK_START_MS + i * quarter_ms, o, h, lo, c, v, WEEK_START_MS + (i + 1) * quarter_ms - 1, q, n, b, bq, "0"]
        for i, (o, h, lo, c, v, q, n, b, bq) in enumerate([
            ("93576.00000000", "93650.12000000", "93510.55000000", "93601.37000000", "212.34567891",
             "19876543.21098765", 31245, "101.12345678", "9466123.45678901"),
            ("93601.37000000", "93688.00000000", "93580.01000000", "93640.10000000", "187.00000001",
             "17512345.67890123", 28110, "93.50000001", "8755678.90123456"),
        ])
    ]
    klines("klines_15m_fine.json", "15m", WEEK_START_MS, 2, fine)
    # Weekly candles: Binance opens them on Mondays, not on multiples of 604800 s since the epoch
    # (a Thursday). Asked from Thursday 2025-01-02, it returns the weeks of Jan 6 and Jan 13.
    week_ms = 7 * day_ms
    monday = WEEK_START_MS + 5 * day_ms
    weekly = [kline({**candles[120], "open_ms": monday + w * week_ms}, week_ms) for w in range(2)]
    klines("klines_1w_monday.json", "1w", WEEK_START_MS + day_ms, 2, weekly)
    # Monthly candles (interval 1M): Binance opens them on the 1st, 00:00 UTC, and they last the
    # calendar month. Asked from 2024-11-01 for two months: November (30 days), December (31).
    november_ms, december_ms, january_ms = 1_730_419_200_000, 1_733_011_200_000, WEEK_START_MS
    monthly = [
        kline({**candles[0], "open_ms": november_ms}, december_ms - november_ms),
        kline({**candles[24], "open_ms": december_ms}, january_ms - december_ms),
    ]
    klines("klines_1M_months.json", "1M", november_ms, 2, monthly)
    # An unknown symbol, answered the way Binance does (HTTP 400, code -1121).
    record("klines_invalid_symbol.json", "/api/v3/klines",
           {"symbol": "BTCUSDT", "interval": "1h", "startTime": WEEK_START_MS + 24 * HOUR_MS, "limit": 1},
           {"code": -1121, "msg": "Invalid symbol."}, status=400)
    (RECORDINGS / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="ascii")


def main() -> None:
    candles = hourly_week()
    write_example_csv(candles)
    write_recordings(candles)


if __name__ == "__main__":
    main()
