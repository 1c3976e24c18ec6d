-- Which orchestrator committed an outbox entry and is publishing it: each holds a session
-- advisory lock on its number for its whole life, so another orchestrator re-sends an
-- entry only once that lock is free (its publisher is really gone), never while it is
-- still being published.
ALTER TABLE mindbus_outbox ADD COLUMN IF NOT EXISTS publisher integer;
