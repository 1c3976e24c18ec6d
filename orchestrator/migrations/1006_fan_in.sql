-- Fan-in without rewriting the run: each answer of a step's command is kept on the
-- command's own row, and a counter per running step says how many are still to come. The
-- run's state is read and written only when a step's last answer arrives.
ALTER TABLE mindbus_run_commands ADD COLUMN IF NOT EXISTS output jsonb;
CREATE INDEX IF NOT EXISTS mindbus_run_commands_step ON mindbus_run_commands (run_id, step, round, item);

CREATE TABLE IF NOT EXISTS mindbus_run_open_steps (
    run_id  uuid NOT NULL REFERENCES mindbus_runs (id),
    step    text NOT NULL,
    round   integer NOT NULL,
    -- Commands of this round whose answers have not come.
    open    integer NOT NULL,
    PRIMARY KEY (run_id, step)
);

-- Runs in flight move to the new state: a running step's answers so far go to their
-- command rows and its counter is set. Every stored state (a failed or canceled run may
-- keep steps that were running) has its `outputs` lists become counts. Stop every older
-- orchestrator before starting one that applies this.
UPDATE mindbus_run_commands c SET output = s.value -> 'outputs' -> c.item
FROM mindbus_runs r, jsonb_each(r.state -> 'steps') s
WHERE r.id = c.run_id AND r.status = 'running' AND s.key = c.step
  AND s.value ->> 'state' = 'running' AND (s.value ->> 'round')::int = c.round
  AND s.value ? 'outputs' AND c.applied_at IS NOT NULL;

INSERT INTO mindbus_run_open_steps (run_id, step, round, open)
SELECT r.id, s.key, (s.value ->> 'round')::int,
       (SELECT count(*) FROM mindbus_run_commands c
        WHERE c.run_id = r.id AND c.step = s.key AND c.round = (s.value ->> 'round')::int
          AND c.applied_at IS NULL)
FROM mindbus_runs r, jsonb_each(r.state -> 'steps') s
WHERE r.status = 'running' AND s.value ->> 'state' = 'running' AND s.value ? 'outputs'
ON CONFLICT (run_id, step) DO NOTHING;

UPDATE mindbus_runs r SET state = jsonb_set(r.state, '{steps}', (
    SELECT jsonb_object_agg(s.key, CASE
        WHEN s.value ->> 'state' = 'running' AND s.value ? 'outputs'
        THEN (s.value - 'outputs') || jsonb_build_object('commands', jsonb_array_length(s.value -> 'outputs'))
        ELSE s.value END)
    FROM jsonb_each(r.state -> 'steps') s))
WHERE EXISTS (SELECT 1 FROM jsonb_each(r.state -> 'steps') s
              WHERE s.value ->> 'state' = 'running' AND s.value ? 'outputs');
