-- ERP order headers, one row per order.
SELECT
    order_id,
    customer_id,
    order_date,
    channel,
    store_id,
    status,
    payment_status,
    delivery
FROM erp_orders
