-- int_pain_orders: the orders up to the as-of date that met a pain point, a failed payment
-- or a return, one row per order_id (the first copy of a re-exported order by date,
-- customer and the columns read here), with the person of their ERP customer number.
-- mart_touchpoints reads failed payments and returns from here, so the join with the
-- identity keys sees only these orders, and the orders are deduplicated once (a sort that
-- spills) instead of once per use.
-- Columns and definitions: int_pain_orders.yml.
WITH order_copies AS (
    SELECT
        order_id,
        customer_id,
        order_date,
        lower(trim(payment_status)) = 'failed' AS payment_failed,
        coalesce(nullif(lower(trim(channel)), ''), CASE WHEN store_id IS NOT NULL THEN 'store' ELSE '(none)' END) AS channel_key,
        -- Copies can tie on date and customer; the export columns read here end the
        -- ordering, so that the same copy is kept whatever the row order.
        row_number() OVER (
            PARTITION BY order_id ORDER BY order_date, customer_id, payment_status, channel, store_id
        ) AS copy_no
    FROM stg_orders
    WHERE order_date <= $as_of
),
returned AS (
    SELECT DISTINCT order_id FROM stg_returns
),
pain AS (
    SELECT o.order_id, o.customer_id, o.order_date, coalesce(o.payment_failed, false) AS payment_failed, o.channel_key,
           r.order_id IS NOT NULL AS has_return
    FROM returned r
    RIGHT JOIN order_copies o ON o.order_id = r.order_id
    WHERE o.copy_no = 1
)
SELECT p.order_id, k.customer_key, p.customer_id, p.order_date, p.payment_failed, p.has_return, p.channel_key
FROM int_erp_keys k
RIGHT JOIN pain p ON k.customer_id = p.customer_id
WHERE p.payment_failed OR p.has_return
