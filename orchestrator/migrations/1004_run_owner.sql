-- Who started a run (the gateway names the API key), so that the runs one owner has
-- running at once can be counted and limited.
ALTER TABLE mindbus_runs ADD COLUMN IF NOT EXISTS owner text;
CREATE INDEX IF NOT EXISTS mindbus_runs_running_by_owner ON mindbus_runs (owner) WHERE status = 'running';
