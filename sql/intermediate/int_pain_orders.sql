-- int_pain_orders: the orders up to the as-of date that met a pain point, a failed payment
-- or a return, one row per order_id (stg_orders keeps one copy of a re-exported order),
-- with the person of their ERP customer number. mart_touchpoints reads failed payments and
-- returns from here, so the join with the identity keys sees only these orders.
-- Columns and definitions: int_pain_orders.yml.
WITH returned AS (
    -- Named apart from the orders' order_id: DataFusion 55 pushes the final filter through
    -- the outer join below by column name, and would test the orders' own order_id.
    SELECT DISTINCT order_id AS returned_order_id FROM stg_returns
),
pain AS (
    SELECT
        o.order_id,
        o.customer_id,
        o.order_date,
        coalesce(lower(trim(o.payment_status)) = 'failed', false) AS payment_failed,
        coalesce(nullif(lower(trim(o.channel)), ''), CASE WHEN o.store_id IS NOT NULL THEN 'store' ELSE '(none)' END) AS channel_key,
        r.returned_order_id IS NOT NULL AS has_return
    FROM returned r
    RIGHT JOIN stg_orders o ON o.order_id = r.returned_order_id
    WHERE o.order_date <= $as_of
)
SELECT p.order_id, k.customer_key, p.customer_id, p.order_date, p.payment_failed, p.has_return, p.channel_key
FROM int_erp_keys k
RIGHT JOIN pain p ON k.customer_id = p.customer_id
WHERE p.payment_failed OR p.has_return
