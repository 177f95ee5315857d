-- ERP order lines with their amounts, one row per order line (order_id, line_no):
-- gross = quantity x unit price, net = gross - discount, cost = quantity x unit cost.
-- A re-exported line (its order_id and line_no again) is one line: exact copies collapse,
-- and of copies that differ the first by SKU, category, quantity, unit price, discount and
-- unit cost is kept, as a whole (a row_number over the key: see stg_orders).
SELECT
    order_id,
    line_no,
    sku,
    category,
    quantity,
    unit_price,
    discount_amount,
    unit_cost,
    quantity * unit_price AS gross_amount,
    quantity * unit_price - coalesce(discount_amount, 0) AS net_amount,
    quantity * unit_cost AS cost_amount
FROM (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY order_id, line_no
            ORDER BY sku, category, quantity, unit_price, discount_amount, unit_cost
        ) AS copy_no
    FROM erp_order_lines
) l
WHERE copy_no = 1
