-- ERP order headers, one row per order_id.
-- A re-exported order (its order_id again) is one order: exact copies collapse, and of
-- copies that differ the first by order date, customer, payment status, channel, store,
-- status and delivery is kept, as a whole. A row_number over order_id picks that copy
-- with one sort (which spills under the memory limit); a first_value(... ORDER BY ...)
-- aggregate per column keeps every order's ordering values in memory and is many times
-- slower in DataFusion.
SELECT
    order_id,
    customer_id,
    order_date,
    channel,
    store_id,
    status,
    payment_status,
    delivery
FROM (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY order_id
            ORDER BY order_date, customer_id, payment_status, channel, store_id, status, delivery
        ) AS copy_no
    FROM erp_orders
) o
WHERE copy_no = 1
