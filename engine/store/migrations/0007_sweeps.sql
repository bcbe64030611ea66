-- Runs that share a database (sweeps: many backtests at once). Until now a row belonged to the run
-- whose RunStarted id was the greatest below its own (run_spans, 0002): true only while one writer
-- at a time used the database. From here every row names its run and arena: `run_id` is the
-- RunStarted.run_id of the run that made it, `arena_id` the run_id of the run that began its arena
-- (the latest fresh run of its mode and source, or the first one). The writer stamps both on each
-- row (engine.store.rows.RunStamp). Rows stored before this migration are converted below by the
-- old rule; a row written without a run (none are, by the engine) keeps NULL in both. A refused
-- row in `quarantine` (0004) names the run and arena of the row it holds.

ALTER TABLE runs ADD COLUMN arena_id uuid;
UPDATE runs r SET arena_id = coalesce(
    (SELECT f.run_id FROM runs f
     WHERE f.mode = r.mode AND f.source IS NOT DISTINCT FROM r.source AND f.fresh AND f.id <= r.id
     ORDER BY f.id DESC LIMIT 1),
    (SELECT f.run_id FROM runs f
     WHERE f.mode = r.mode AND f.source IS NOT DISTINCT FROM r.source
     ORDER BY f.id LIMIT 1));
CREATE INDEX runs_arena_id ON runs (arena_id, id);

-- A runs row stored without its arena (the engine always gives it; a hand-written row may not):
-- a fresh run begins its own, another continues the arena of the latest run of its mode and source.
CREATE FUNCTION runs_arena() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.arena_id IS NULL THEN
        NEW.arena_id := CASE WHEN NEW.fresh THEN NEW.run_id ELSE coalesce(
            (SELECT r.arena_id FROM runs r
             WHERE r.mode = NEW.mode AND r.source IS NOT DISTINCT FROM NEW.source
             ORDER BY r.id DESC LIMIT 1), NEW.run_id) END;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER runs_arena BEFORE INSERT ON runs FOR EACH ROW EXECUTE FUNCTION runs_arena();

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['cycles', 'decisions', 'rejections', 'fills', 'positions', 'funding',
                             'account_snapshots', 'job_runs', 'llm_cache_hits', 'quarantine'] LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN run_id uuid, ADD COLUMN arena_id uuid', t);
        EXECUTE format(
            'UPDATE %I t SET (run_id, arena_id) = (SELECT r.run_id, r.arena_id FROM runs r '
            'WHERE r.id < t.id ORDER BY r.id DESC LIMIT 1)', t);
        EXECUTE format('CREATE INDEX %I ON %I (run_id, id)', t || '_run_id', t);
    END LOOP;
END $$;

-- Recovery reads a trader's latest snapshot of its arena.
CREATE INDEX account_snapshots_arena_trader_id ON account_snapshots (arena_id, trader, id);

-- The runs of the current arena of a mode and source: every run stamped with the arena of the
-- latest run of that mode and source. Join a table on `t.run_id = a.run_id` to keep its rows.
CREATE OR REPLACE FUNCTION arena_runs(p_mode text, p_source text DEFAULT NULL)
RETURNS SETOF run_spans
LANGUAGE sql STABLE AS $$
    SELECT s.* FROM run_spans s JOIN runs r ON r.id = s.id
    WHERE r.arena_id = (SELECT l.arena_id FROM runs l
                        WHERE l.mode = p_mode AND l.source IS NOT DISTINCT FROM p_source
                        ORDER BY l.id DESC LIMIT 1)
$$;

-- Sweeps (engine/app/sweep.py): one row per run of a sweep, keyed by the hash of its window,
-- variant, replicate and settings, so a finished run is never run again and an edited sweep file
-- runs only what it changed. status: running | done | failed. `run_id` names the backtest's run.
CREATE TABLE sweep_runs (
    sweep         text NOT NULL,
    key           text NOT NULL,
    variant       text NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    replicate     integer NOT NULL,
    status        text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    run_id        uuid,
    exit_code     integer,
    run_dir       text NOT NULL,          -- the run's settings, log and report files
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    PRIMARY KEY (sweep, key)
);
CREATE INDEX sweep_runs_run_id ON sweep_runs (run_id);

-- One token bucket per LLM provider, shared by every run writing to this database (taken with
-- SELECT ... FOR UPDATE): requests and tokens refill per minute; a 429 pushes `slow_until` back
-- for every run using the provider (engine/traders/rate_budget.py).
CREATE TABLE rate_buckets (
    provider     text PRIMARY KEY,
    requests     double precision NOT NULL,  -- requests left in the bucket
    tokens       double precision NOT NULL,  -- tokens left in the bucket
    updated_at   double precision NOT NULL,  -- epoch seconds of the last refill
    slow_until   double precision NOT NULL DEFAULT 0,
    penalties    integer NOT NULL DEFAULT 0  -- 429s seen since the last full minute without one
);
