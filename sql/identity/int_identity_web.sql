-- Web cookies as identity records: the ERP customer of the cookie's first login and the
-- first e-mail typed at checkout. A cookie with neither says nothing about a person and is
-- left out (it stays anonymous in the touchpoints). stg_clickstream has one row per
-- event_id, so event time, then event_id, orders the events totally.
SELECT
    cookie_id,
    first_value(login_customer_id ORDER BY event_time, event_id)
        FILTER (WHERE login_customer_id IS NOT NULL) AS erp_customer_id,
    first_value(normalize_email(checkout_email) ORDER BY event_time, event_id)
        FILTER (WHERE normalize_email(checkout_email) IS NOT NULL) AS email,
    max(event_time) AS updated_at
FROM stg_clickstream
WHERE login_customer_id IS NOT NULL OR checkout_email IS NOT NULL
GROUP BY cookie_id
