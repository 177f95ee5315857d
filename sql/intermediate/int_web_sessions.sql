-- The web clickstream up to the as-of date, one row per event_id (stg_clickstream keeps one
-- copy of a re-exported event), cut into sessions. Every event carries its session's number,
-- its place in the session, the UTM tags of the session's first event, the customer the
-- session logs in as (its first login) and the customer of the cookie's first login.
--
-- Everything is computed with window functions whose frames end at the current row, which
-- DataFusion evaluates as streams over sorted input (sorts spill to disk under the memory
-- limit), instead of joining per-session tables back to 50 million events. The first login
-- of a session or cookie is the first row when its events are ordered logins first, then by
-- time.
WITH web_events AS (
    SELECT event_id, cookie_id, event_time, page_type, utm_source, utm_medium, login_customer_id
    FROM stg_clickstream
    WHERE CAST(event_time AT TIME ZONE $report_time_zone AS DATE) <= $as_of
),
web_gaps AS (
    -- Sessions are cut on UTC instants: a daylight-saving change never splits or merges one.
    SELECT
        w.*,
        CAST(event_time AS BIGINT)
            - lag(CAST(event_time AS BIGINT)) OVER (PARTITION BY cookie_id ORDER BY event_time, event_id) AS gap_micros
    FROM web_events w
),
web_numbered AS (
    SELECT
        g.*,
        sum(CASE WHEN gap_micros IS NULL OR gap_micros >= $session_timeout_minutes * 60000000 THEN 1 ELSE 0 END)
            OVER (PARTITION BY cookie_id ORDER BY event_time, event_id ROWS UNBOUNDED PRECEDING) AS session_no,
        first_value(login_customer_id) OVER (
            PARTITION BY cookie_id ORDER BY login_customer_id IS NULL, event_time, event_id ROWS UNBOUNDED PRECEDING
        ) AS cookie_customer_id
    FROM web_gaps g
),
web_sessions AS (
    SELECT
        n.*,
        row_number() OVER (PARTITION BY cookie_id, session_no ORDER BY event_time, event_id) AS session_event_no,
        first_value(utm_source)
            OVER (PARTITION BY cookie_id, session_no ORDER BY event_time, event_id ROWS UNBOUNDED PRECEDING) AS first_utm_source,
        first_value(utm_medium)
            OVER (PARTITION BY cookie_id, session_no ORDER BY event_time, event_id ROWS UNBOUNDED PRECEDING) AS first_utm_medium,
        first_value(login_customer_id) OVER (
            PARTITION BY cookie_id, session_no ORDER BY login_customer_id IS NULL, event_time, event_id ROWS UNBOUNDED PRECEDING
        ) AS session_customer_id
    FROM web_numbered n
)
SELECT
    event_id,
    cookie_id,
    event_time,
    page_type,
    session_no,
    session_event_no,
    coalesce(nullif(lower(trim(first_utm_source)), ''), '(none)') AS utm_source_key,
    coalesce(nullif(lower(trim(first_utm_medium)), ''), '(none)') AS utm_medium_key,
    session_customer_id,
    cookie_customer_id
FROM web_sessions
