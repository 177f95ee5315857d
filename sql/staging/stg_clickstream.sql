-- Web clickstream events, one row per event_id; ts is UTC.
-- A re-exported event is one event: exact copies collapse, and of copies that differ the
-- earliest is kept, then the first by cookie, login, page type, UTM source and medium, URL
-- and checkout e-mail, as a whole (a row_number over the key: see stg_orders). Materialised:
-- the web identity records and the sessions both read it.
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
    SELECT
        *,
        row_number() OVER (
            PARTITION BY event_id
            ORDER BY ts, cookie_id, login_customer_id, page_type, utm_source, utm_medium, url, checkout_email
        ) AS copy_no
    FROM web_clickstream
) w
WHERE copy_no = 1
