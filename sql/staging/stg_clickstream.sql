-- Web clickstream events; ts is UTC.
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
FROM web_clickstream
