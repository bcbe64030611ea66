-- Each run's labels per trader (a backtest: the model, its training-data cutoff, the window's
-- exposure to it — none | partial | full | unknown — and whether the trader ran blind), for the
-- report and the leaderboard (docs/backtests.md). NULL: no labels (live runs, replays).
ALTER TABLE runs ADD COLUMN labels jsonb;
