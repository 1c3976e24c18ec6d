-- One row per stream entry, unique by stream and entry id. Typed columns for what people
-- query; every field kept in `fields`; `data` decoded to JSON whatever its encoding.
CREATE TABLE IF NOT EXISTS mindbus_entries (
    stream         text        NOT NULL,
    entry_ms       bigint      NOT NULL,
    entry_seq      bigint      NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('command', 'result', 'event', 'deadletter', 'other')),
    type           text,
    id             uuid,
    correlation_id uuid,
    run_id         text,
    step_id        text,
    status         text,
    source         text,
    role           text,
    time           timestamptz,
    trace_id       text,
    data           jsonb,
    fields         jsonb       NOT NULL,
    malformed      text,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, entry_ms, entry_seq)
);

CREATE INDEX IF NOT EXISTS mindbus_entries_id ON mindbus_entries (id);
CREATE INDEX IF NOT EXISTS mindbus_entries_correlation ON mindbus_entries (correlation_id);
CREATE INDEX IF NOT EXISTS mindbus_entries_run ON mindbus_entries (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS mindbus_entries_type_time ON mindbus_entries (type, time);
CREATE INDEX IF NOT EXISTS mindbus_entries_time ON mindbus_entries (time);
