-- Purchases for the CLV models: one row per person and purchase day (orders on the
-- same day are merged), net revenue of completed orders up to the as-of date.
SELECT
    customer_key,
    order_date AS purchase_date,
    sum(net_amount) AS amount
FROM int_order_values
GROUP BY customer_key, order_date
