-- The tenant a run spends for (the `tenant` field of its `run.start`), copied to every
-- command the run sends so that per-tenant LLM budgets apply to runs too.
ALTER TABLE mindbus_runs ADD COLUMN IF NOT EXISTS tenant text;
