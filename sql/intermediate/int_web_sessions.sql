-- The web clickstream up to the as-of date, one row per event_id (stg_clickstream keeps one
-- copy of a re-exported event), cut into sessions. Every event carries its session's number,
-- its place in the session, the UTM tags of the session's first event, the customer the
-- session logs in as (its first login) and the customer of the cookie's first login.
--
-- Shaped for speed and memory: the events are sorted twice, once per direction, instead of
-- once per window. Every window is partitioned by cookie_id alone and ordered by time, so
-- that they all share one sort (a window over cookie and session would sort the events
-- again), and its frame ends at the current row, so it runs as a stream over the sorted
-- events (sorts spill to disk under the memory limit). Values of a session's first event
-- are carried forward from it (the last session start seen is the current session's);
-- numbers are carried with max and sum, text with last_value IGNORE NULLS.
--   1. In time order: the gap to the previous event cuts sessions; running counts number
--      them and place each event. The session's first login so far is carried from the
--      login event whose session had no login before it ('' marks a session start, so
--      a new session forgets the last one's login; 'L' || id keeps an empty id apart).
--   2. In reverse time order: the earliest login at or after each event, for the events
--      before their session's or cookie's first login.
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
        max(CASE WHEN starts_session = 1 THEN cookie_event_no END) OVER cookie_running AS session_start_no,
        last_value(CASE WHEN starts_session = 1 THEN coalesce(utm_source, '') END) IGNORE NULLS OVER cookie_running
            AS first_utm_source,
        last_value(CASE WHEN starts_session = 1 THEN coalesce(utm_medium, '') END) IGNORE NULLS OVER cookie_running
            AS first_utm_medium,
        last_value(CASE WHEN login_customer_id IS NOT NULL THEN session_no END) IGNORE NULLS OVER (
            PARTITION BY cookie_id ORDER BY event_time, event_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS previous_login_session_no
    FROM web_numbered n
    WINDOW cookie_running AS (PARTITION BY cookie_id ORDER BY event_time, event_id ROWS UNBOUNDED PRECEDING)
),
web_session_logins AS (
    SELECT
        s.*,
        last_value(CASE
            WHEN login_customer_id IS NOT NULL AND coalesce(previous_login_session_no < session_no, true)
            THEN 'L' || login_customer_id
            WHEN starts_session = 1 THEN ''
        END) IGNORE NULLS OVER (
            PARTITION BY cookie_id ORDER BY event_time, event_id ROWS UNBOUNDED PRECEDING
        ) AS session_login_mark
    FROM web_sessions s
),
web_next_login AS (
    SELECT
        s.*,
        last_value(login_customer_id) IGNORE NULLS OVER reverse_running AS next_login_customer_id,
        last_value(CASE WHEN login_customer_id IS NOT NULL THEN session_no END) IGNORE NULLS OVER reverse_running
            AS next_login_session_no
    FROM web_session_logins s
    -- page_type never decides (event_id is unique) but keeps this a sort of its own: run
    -- over the events in time order instead, these windows' frames would reach to the
    -- cookie's last event, and the engine would hold every event in memory.
    WINDOW reverse_running AS (
        PARTITION BY cookie_id ORDER BY event_time DESC, event_id DESC, page_type ROWS UNBOUNDED PRECEDING
    )
)
SELECT
    event_id,
    cookie_id,
    event_time,
    page_type,
    session_no,
    CAST(cookie_event_no - session_start_no + 1 AS BIGINT UNSIGNED) AS session_event_no,
    coalesce(nullif(lower(trim(first_utm_source)), ''), '(none)') AS utm_source_key,
    coalesce(nullif(lower(trim(first_utm_medium)), ''), '(none)') AS utm_medium_key,
    coalesce(
        substr(nullif(session_login_mark, ''), 2),
        CASE WHEN next_login_session_no = session_no THEN next_login_customer_id END
    ) AS session_customer_id,
    coalesce(cookie_login_so_far, next_login_customer_id) AS cookie_customer_id
FROM web_next_login
