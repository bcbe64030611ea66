-- Arenas kept apart: each run records its mode (live | replay | backtest) and its source (replay:
-- sha256 of the file; backtest: a hash of the window; live: NULL). Runs stored before this
-- migration were live runs.
ALTER TABLE runs
    ADD COLUMN mode text NOT NULL DEFAULT 'live'
        CHECK (mode IN ('live', 'replay', 'backtest')),
    ADD COLUMN source text;
CREATE INDEX runs_mode_source ON runs (mode, source, id);

-- Every run's span of ids: a row belongs to the run whose RunStarted id is the greatest id below
-- the row's own id (ids are UUIDv7, ordered by the time they were made), whatever its mode.
CREATE VIEW run_spans AS
SELECT id, run_id, started_at, mode, source, fresh, dry_run,
       lead(id) OVER (ORDER BY id) AS next_id
FROM runs;

-- The runs of the current arena of a mode and source: from the latest run of that mode and source
-- stored with fresh = true (or from its first run) to now. Join a table on
-- `t.id > a.id AND (a.next_id IS NULL OR t.id < a.next_id)` to keep that arena's rows only.
CREATE FUNCTION arena_runs(p_mode text, p_source text DEFAULT NULL)
RETURNS SETOF run_spans
LANGUAGE sql STABLE AS $$
    SELECT s.* FROM run_spans s
    WHERE s.mode = p_mode AND s.source IS NOT DISTINCT FROM p_source
      AND s.id >= coalesce(
          (SELECT r.id FROM runs r
           WHERE r.mode = p_mode AND r.source IS NOT DISTINCT FROM p_source AND r.fresh
           ORDER BY r.id DESC LIMIT 1),
          '00000000-0000-0000-0000-000000000000'::uuid)
$$;
