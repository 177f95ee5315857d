-- Purchases for the CLV models: one row per customer and purchase day (orders on the
-- same day are merged), net revenue of completed orders up to the as-of date.
SELECT
    o.customer_id,
    o.order_date AS purchase_date,
    sum(l.net_amount) AS amount
FROM stg_orders o
JOIN stg_order_lines l ON l.order_id = o.order_id
WHERE o.status = 'completed'
  AND o.order_date <= $as_of
GROUP BY o.customer_id, o.order_date
