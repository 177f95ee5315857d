-- int_customer_sessions: the web sessions of mart_touchpoints attributed to a person, one row
-- per (customer_key, session_id). mart_journeys reads it three times (session counts, the
-- first day's converting session, the path before the first purchase); as a table of its
-- own it is aggregated from the touchpoints once, not once per reference.
-- Columns and definitions: int_customer_sessions.yml.
SELECT
    customer_key,
    session_id,
    min(occurred_at) AS session_start,
    min(occurred_on) AS session_start_on,
    max(CASE WHEN is_session_entry THEN entry_channel END) AS entry_channel,
    max(CASE WHEN lower(trim(page_type)) = 'confirmation' THEN 1 ELSE 0 END) AS converted
FROM mart_touchpoints
WHERE customer_key IS NOT NULL AND session_id IS NOT NULL
GROUP BY customer_key, session_id
