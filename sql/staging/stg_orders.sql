-- ERP order headers, one row per order_id.
-- A re-exported order (its order_id again) is one order: exact copies collapse, and of
-- copies that differ the first by order date, customer, payment status, channel, store,
-- status and delivery is kept, as a whole.
--
-- Shaped for speed: the order ids that repeat are found by a hash aggregation; orders with
-- a single copy pass through (an anti join against that small table), and only the
-- repeated ones are sorted to pick their copy (a row_number over the key). Each join is
-- written `small RIGHT ... JOIN large` so that the table of repeated ids is the one held
-- in memory; both joins read it, so it is computed once (AS MATERIALIZED). (A
-- first_value(... ORDER BY ...) aggregate per column would keep every order's ordering
-- values in memory and is many times slower in DataFusion.)
WITH repeated_ids AS MATERIALIZED (
    SELECT order_id FROM erp_orders GROUP BY order_id HAVING count(*) > 1
),
copies AS (
    SELECT
        o.*,
        row_number() OVER (
            PARTITION BY order_id
            ORDER BY order_date, customer_id, payment_status, channel, store_id, status, delivery
        ) AS copy_no
    FROM repeated_ids r
    RIGHT SEMI JOIN erp_orders o ON o.order_id = r.order_id
)
SELECT order_id, customer_id, order_date, channel, store_id, status, payment_status, delivery
FROM repeated_ids r
RIGHT ANTI JOIN erp_orders o ON o.order_id = r.order_id
UNION ALL
SELECT order_id, customer_id, order_date, channel, store_id, status, payment_status, delivery
FROM copies
WHERE copy_no = 1
