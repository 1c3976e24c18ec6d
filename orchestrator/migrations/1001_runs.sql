-- Workflow runs, their commands, the outbox of entries to publish and the timers.
-- Numbered from 1001 so that these migrations and the monitor's share one database.

CREATE TABLE mindbus_runs (
    id          uuid PRIMARY KEY,
    workflow    text NOT NULL,
    -- The workflow file as it was when the run started: the run keeps it to the end.
    definition  text NOT NULL,
    status      text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'canceled')),
    input       jsonb NOT NULL,
    -- The engine's state (every step's state, added steps); replaced in each transition.
    state       jsonb NOT NULL,
    output      jsonb,
    error       text,
    traceparent text,
    deadline_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mindbus_runs_recent ON mindbus_runs (created_at DESC);

-- One row per command a run sent. Its id is derived from (run, step, item, round), so a
-- step re-sent after a crash is the same command. applied_at is set once, in the
-- transaction that applies the command's result.
CREATE TABLE mindbus_run_commands (
    command_id   uuid PRIMARY KEY,
    run_id       uuid NOT NULL REFERENCES mindbus_runs (id),
    step         text NOT NULL,
    item         integer NOT NULL,
    round        integer NOT NULL,
    role         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    applied_at   timestamptz,
    status       text,
    -- Times the command was sent again because the orchestrator that committed it died
    -- before sending it.
    resent       integer NOT NULL DEFAULT 0
);
CREATE INDEX mindbus_run_commands_open ON mindbus_run_commands (run_id) WHERE applied_at IS NULL;

-- Entries committed with a transition and published after it (commands, cancellations,
-- run events); a row is deleted once published.
CREATE TABLE mindbus_outbox (
    id          bigserial PRIMARY KEY,
    run_id      uuid NOT NULL,
    command_id  uuid,
    stream      text NOT NULL,
    maxlen      bigint,
    fields      jsonb NOT NULL,
    -- The insert's own time, not the transaction's: a transaction that waited for a run's
    -- lock must not publish rows the sweep already thinks abandoned.
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE mindbus_run_timers (
    run_id  uuid NOT NULL REFERENCES mindbus_runs (id),
    kind    text NOT NULL CHECK (kind IN ('deadline', 'approval')),
    step    text NOT NULL DEFAULT '',
    due_at  timestamptz NOT NULL,
    PRIMARY KEY (run_id, kind, step)
);
CREATE INDEX mindbus_run_timers_due ON mindbus_run_timers (due_at);
