-- Web clickstream events, one row per event_id; ts is UTC.
-- A re-exported event is one event: exact copies collapse, and of copies that differ the
-- earliest is kept, then the first by cookie, login, page type, UTM source and medium, URL
-- and checkout e-mail, as a whole. Materialised: the web identity records and the sessions
-- both read it.
--
-- Shaped for speed: almost every event_id comes once, so the event ids that repeat are
-- found by a hash aggregation; events with a single copy pass through (an anti join
-- against that small table), and only the repeated ones are sorted to pick their copy
-- (a row_number over the key). One sort of every event by all its columns took three
-- times as long. Each join is written `small RIGHT ... JOIN large` so that the small
-- table of repeated ids is the one held in memory. Both joins read it: it is computed once
-- (AS MATERIALIZED) instead of aggregating every event twice.
WITH repeated_ids AS MATERIALIZED (
    SELECT event_id FROM web_clickstream GROUP BY event_id HAVING count(*) > 1
),
single_copies AS (
    SELECT c.*
    FROM repeated_ids r
    RIGHT ANTI JOIN web_clickstream c ON c.event_id = r.event_id
),
chosen_copies AS (
    SELECT event_id, cookie_id, ts, page_type, url, utm_source, utm_medium, login_customer_id, checkout_email
    FROM (
        SELECT
            c.*,
            row_number() OVER (
                PARTITION BY event_id
                ORDER BY ts, cookie_id, login_customer_id, page_type, utm_source, utm_medium, url, checkout_email
            ) AS copy_no
        FROM repeated_ids r
        RIGHT SEMI JOIN web_clickstream c ON c.event_id = r.event_id
    ) copies
    WHERE copy_no = 1
)
SELECT
    event_id,
    cookie_id,
    ts AS event_time,
    page_type,
    url,
    utm_source,
    utm_medium,
    login_customer_id,
    checkout_email
FROM (
    SELECT event_id, cookie_id, ts, page_type, url, utm_source, utm_medium, login_customer_id, checkout_email FROM single_copies
    UNION ALL
    SELECT event_id, cookie_id, ts, page_type, url, utm_source, utm_medium, login_customer_id, checkout_email FROM chosen_copies
) w
