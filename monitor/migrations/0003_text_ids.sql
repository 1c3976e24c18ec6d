-- A CloudEvents id is any text (`order-42`), not only a UUID: ids and correlation ids are
-- stored as text. MindBus's own ids are UUIDs written as text, so nothing recorded changes.
-- The LLM usage views read correlation_id, so they are dropped and made again around it.
DROP VIEW mindbus_llm_run_usage;
DROP VIEW mindbus_llm_usage;
ALTER TABLE mindbus_entries ALTER COLUMN id TYPE text USING id::text;
ALTER TABLE mindbus_entries ALTER COLUMN correlation_id TYPE text USING correlation_id::text;

CREATE OR REPLACE VIEW mindbus_llm_usage AS
SELECT
    time,
    run_id,
    step_id,
    role,
    correlation_id AS command_id,
    data ->> 'model' AS model,
    CASE WHEN jsonb_typeof(data -> 'tokens_in') = 'number' THEN (data ->> 'tokens_in')::numeric::bigint END AS tokens_in,
    CASE WHEN jsonb_typeof(data -> 'tokens_out') = 'number' THEN (data ->> 'tokens_out')::numeric::bigint END AS tokens_out,
    CASE WHEN jsonb_typeof(data -> 'cost_micros') = 'number' THEN (data ->> 'cost_micros')::numeric::bigint END AS cost_micros,
    CASE WHEN jsonb_typeof(data -> 'latency_ms') = 'number' THEN (data ->> 'latency_ms')::numeric::bigint END AS latency_ms,
    CASE WHEN jsonb_typeof(data -> 'cachehit') = 'boolean' THEN (data ->> 'cachehit')::boolean END AS cache_hit
FROM mindbus_entries
WHERE kind = 'event' AND type = 'mindbus.llm.usage';

CREATE OR REPLACE VIEW mindbus_llm_run_usage AS
SELECT
    run_id,
    count(*)::bigint AS calls,
    count(*) FILTER (WHERE cache_hit) AS cache_hits,
    coalesce(sum(tokens_in), 0)::bigint AS tokens_in,
    coalesce(sum(tokens_out), 0)::bigint AS tokens_out,
    coalesce(sum(cost_micros), 0)::bigint AS cost_micros,
    coalesce(sum(cost_micros), 0) / 1e6 AS cost_usd
FROM mindbus_llm_usage
WHERE run_id IS NOT NULL
GROUP BY run_id;
