-- Rows the database refused (engine.store.errors): the writer records each one here as soon as
-- it is refused, halts trading, and retries. `run.py db --quarantine ID` sets quarantined_at;
-- at its next retry the writer takes the row out of its queue (or the spill replay skips it),
-- sets moved_at, and writes on. The row is kept as its spill-file JSON line.
CREATE TABLE quarantine (
    id uuid PRIMARY KEY,                 -- the refused row's own id
    table_name text NOT NULL,            -- the table it was refused by
    row_json text NOT NULL,              -- {"t": table, "r": [values]}, as in the spill file
    error text NOT NULL,                 -- the database's error, with its SQLSTATE
    refused_at timestamptz NOT NULL DEFAULT now(),
    quarantined_at timestamptz,          -- when an operator asked for it
    moved_at timestamptz                 -- when the writer took it out of the event stream
);
