-- arena schema v1. One row per persisted event; every primary key is the event's own `id`
-- (a UUIDv7 made when the event was created), so a retried batch can never insert a row twice.
-- Times are timestamptz (events carry epoch seconds; the writer converts them). Money and
-- prices are double precision, so a value read back is bit-for-bit the float that was written.

CREATE TABLE runs (
    id             uuid PRIMARY KEY,
    run_id         uuid NOT NULL,
    started_at     timestamptz NOT NULL,
    version        text NOT NULL,
    settings_hash  text NOT NULL,
    fresh          boolean NOT NULL,   -- true: this run started a new arena (--fresh)
    dry_run        boolean NOT NULL
);
CREATE INDEX runs_started_at ON runs (started_at);

CREATE TABLE cycles (
    id           uuid PRIMARY KEY,
    cycle_id     text NOT NULL,
    trigger      text NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    duration_ms  double precision NOT NULL,
    status       text NOT NULL,         -- ok | failed | skipped | cancelled
    skip_reason  text,
    summary      jsonb NOT NULL,
    snapshot     jsonb                  -- the exact market snapshot the traders saw
);
CREATE INDEX cycles_cycle_id ON cycles (cycle_id);
CREATE INDEX cycles_started_at ON cycles (started_at);

CREATE TABLE decisions (
    id                  uuid PRIMARY KEY,
    cycle_id            text NOT NULL,
    trader              text NOT NULL,
    provider            text NOT NULL,
    model               text NOT NULL,
    prompt_hash         text NOT NULL,
    raw_answer          text NOT NULL,
    decision            jsonb NOT NULL,  -- the parsed decision, or the hold it became
    valid               boolean NOT NULL,
    error               text,
    input_tokens        integer NOT NULL,
    output_tokens       integer NOT NULL,
    cache_read_tokens   integer NOT NULL,
    cache_write_tokens  integer NOT NULL,
    cost_usd            double precision NOT NULL,
    latency_ms          double precision NOT NULL,
    request_id          text,
    ts                  timestamptz NOT NULL
);
CREATE INDEX decisions_cycle_id ON decisions (cycle_id);
CREATE INDEX decisions_trader_ts ON decisions (trader, ts);

CREATE TABLE rejections (
    id        uuid PRIMARY KEY,
    cycle_id  text NOT NULL,
    trader    text NOT NULL,
    symbol    text NOT NULL,
    action    text NOT NULL,
    rule      text NOT NULL,
    detail    text NOT NULL,
    ts        timestamptz NOT NULL
);
CREATE INDEX rejections_cycle_id ON rejections (cycle_id);
CREATE INDEX rejections_trader_ts ON rejections (trader, ts);

CREATE TABLE fills (
    id            uuid PRIMARY KEY,
    trader        text NOT NULL,
    symbol        text NOT NULL,
    side          text NOT NULL,         -- buy | sell
    qty           double precision NOT NULL,
    price         double precision NOT NULL,
    notional      double precision NOT NULL,
    fee           double precision NOT NULL,
    realized_pnl  double precision NOT NULL,
    reason        text NOT NULL,         -- decision | stop_loss | take_profit | liquidation
    cycle_id      text,
    ref_price     double precision,
    ts            timestamptz NOT NULL
);
CREATE INDEX fills_trader_ts ON fills (trader, ts);

-- Open/close history: one row per PositionOpened (event = 'open') or PositionClosed ('close').
CREATE TABLE positions (
    id                 uuid PRIMARY KEY,
    event              text NOT NULL,     -- open | close
    trader             text NOT NULL,
    symbol             text NOT NULL,
    side               text NOT NULL,     -- long | short
    qty                double precision NOT NULL,
    entry_price        double precision NOT NULL,
    exit_price         double precision,  -- close only
    leverage           integer,           -- open only
    margin             double precision,  -- open only
    stop_loss          double precision,
    take_profit        double precision,
    liquidation_price  double precision,  -- open only
    realized_pnl       double precision,  -- close only
    fees               double precision,  -- close only
    reason             text NOT NULL,     -- open: the trader's reason; close: decision | stop_loss | ...
    opened_at          timestamptz,       -- close only
    cycle_id           text,
    ts                 timestamptz NOT NULL
);
CREATE INDEX positions_trader_ts ON positions (trader, ts);

CREATE TABLE funding (
    id        uuid PRIMARY KEY,
    trader    text NOT NULL,
    symbol    text NOT NULL,
    rate      double precision NOT NULL,
    mark      double precision NOT NULL,
    notional  double precision NOT NULL,
    amount    double precision NOT NULL,  -- > 0 paid, < 0 received
    ts        timestamptz NOT NULL
);
CREATE INDEX funding_trader_ts ON funding (trader, ts);

-- The equity curves; the latest row per trader is enough to rebuild the account after a crash.
CREATE TABLE account_snapshots (
    id              uuid PRIMARY KEY,
    trader          text NOT NULL,
    cash            double precision NOT NULL,
    margin          double precision NOT NULL,
    unrealized_pnl  double precision NOT NULL,
    equity          double precision NOT NULL,
    realized_pnl    double precision NOT NULL,
    fees            double precision NOT NULL,
    funding         double precision NOT NULL,
    peak_equity     double precision NOT NULL,
    drawdown_pct    double precision NOT NULL,
    return_pct      double precision NOT NULL,
    positions       jsonb NOT NULL,       -- every open position's full state
    state           jsonb NOT NULL,       -- risk baselines, suspensions, counters
    cause           text NOT NULL,
    cycle_id        text,
    ts              timestamptz NOT NULL
);
CREATE INDEX account_snapshots_trader_ts ON account_snapshots (trader, ts);
CREATE INDEX account_snapshots_trader_id ON account_snapshots (trader, id);  -- restart recovery

CREATE TABLE job_runs (
    id           uuid PRIMARY KEY,
    job          text NOT NULL,
    trigger      text NOT NULL,          -- schedule | manual | once
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    duration_ms  double precision NOT NULL,
    status       text NOT NULL,          -- ok | failed | timeout | skipped | cancelled
    error        text,
    summary      jsonb
);
CREATE INDEX job_runs_job_started_at ON job_runs (job, started_at);
