-- The exact model version the API answered with (e.g. a dated snapshot such as
-- gpt-4o-2024-08-06), beside the model id the trader asked for: a leaderboard or a query can
-- tell versions apart instead of silently mixing them. NULL for rule-based traders, for calls that
-- returned no answer, and for decisions stored before this migration.
ALTER TABLE decisions ADD COLUMN model_version text;
