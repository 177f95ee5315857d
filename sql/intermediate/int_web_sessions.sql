-- The web clickstream up to the as-of date, one row per event_id (stg_clickstream keeps one
-- copy of a re-exported event), cut into sessions. Every event carries its session's number,
-- its place in the session, the UTM tags of the session's first event, the customer the
-- session logs in as (its first login) and the customer of the cookie's first login.
--
-- Shaped for speed and memory: the events are sorted twice, once per direction, instead of
-- once per window. Every window is partitioned by cookie_id alone and ordered by time, so
-- that they all share one sort (a window over cookie and session would sort the events
-- again), and its frame ends at the current row, so it runs as a stream over the sorted
-- events (sorts spill to disk under the memory limit).
--   1. In time order: the gap to the previous event cuts sessions; running counts number
--      them. A running max over the session starts carries the current session's first
--      event forward (the latest start is the current session's), and a running max over
--      the logins, latest session first and then earliest login, the session's first
--      login so far.
--   2. In reverse time order: a running min over the logins finds the earliest login at
--      or after each event, for events before their session's or cookie's first login.
WITH web_events AS (
    SELECT event_id, cookie_id, event_time, page_type, utm_source, utm_medium, login_customer_id
    FROM stg_clickstream
    WHERE CAST(event_time AT TIME ZONE $report_time_zone AS DATE) <= $as_of
),
web_gaps AS (
    -- Sessions are cut on UTC instants: a daylight-saving change never splits or merges one.
    SELECT
        w.*,
        CASE
            WHEN CAST(event_time AS BIGINT) - lag(CAST(event_time AS BIGINT)) OVER cookie_order
                < $session_timeout_minutes * 60000000
            THEN 0
            ELSE 1
        END AS starts_session,
        CAST(row_number() OVER cookie_order AS BIGINT) AS cookie_event_no
    FROM web_events w
    WINDOW cookie_order AS (PARTITION BY cookie_id ORDER BY event_time, event_id)
),
web_numbered AS (
    SELECT
        g.*,
        sum(starts_session) OVER cookie_running AS session_no,
        first_value(login_customer_id) IGNORE NULLS OVER cookie_running AS cookie_login_so_far
    FROM web_gaps g
    WINDOW cookie_running AS (PARTITION BY cookie_id ORDER BY event_time, event_id ROWS UNBOUNDED PRECEDING)
),
web_sessions AS (
    SELECT
        n.*,
        max(CASE WHEN starts_session = 1 THEN
            named_struct('event_no', cookie_event_no, 'utm_source', utm_source, 'utm_medium', utm_medium)
        END) OVER cookie_running AS session_start,
        max(CASE WHEN login_customer_id IS NOT NULL THEN
            named_struct('session_no', session_no, 'earliest', -cookie_event_no, 'customer_id', login_customer_id)
        END) OVER cookie_running AS latest_session_login
    FROM web_numbered n
    WINDOW cookie_running AS (PARTITION BY cookie_id ORDER BY event_time, event_id ROWS UNBOUNDED PRECEDING)
),
web_next_login AS (
    SELECT
        s.*,
        min(CASE WHEN login_customer_id IS NOT NULL THEN
            named_struct('event_no', cookie_event_no, 'session_no', session_no, 'customer_id', login_customer_id)
        END) OVER (
            -- page_type never decides (event_id is unique) but keeps this a sort of its own:
            -- run over the events in time order instead, this window's frame would reach to
            -- the cookie's last event, and the engine would hold every event in memory.
            PARTITION BY cookie_id ORDER BY event_time DESC, event_id DESC, page_type ROWS UNBOUNDED PRECEDING
        ) AS next_login
    FROM web_sessions s
)
SELECT
    event_id,
    cookie_id,
    event_time,
    page_type,
    session_no,
    CAST(cookie_event_no - session_start['event_no'] + 1 AS BIGINT UNSIGNED) AS session_event_no,
    coalesce(nullif(lower(trim(session_start['utm_source'])), ''), '(none)') AS utm_source_key,
    coalesce(nullif(lower(trim(session_start['utm_medium'])), ''), '(none)') AS utm_medium_key,
    coalesce(
        CASE WHEN latest_session_login['session_no'] = session_no THEN latest_session_login['customer_id'] END,
        CASE WHEN next_login['session_no'] = session_no THEN next_login['customer_id'] END
    ) AS session_customer_id,
    coalesce(cookie_login_so_far, next_login['customer_id']) AS cookie_customer_id
FROM web_next_login
