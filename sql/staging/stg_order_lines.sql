-- ERP order lines with their amounts, one row per order line (order_id, line_no):
-- gross = quantity x unit price, net = gross - discount, cost = quantity x unit cost.
-- A re-exported line (its order_id and line_no again) is one line: exact copies collapse,
-- and of copies that differ the first by SKU, category, quantity, unit price, discount and
-- unit cost is kept, as a whole. Only the lines whose key repeats are sorted to pick their
-- copy (see stg_orders). Both joins read the repeated keys: they are computed once, when
-- this view's step runs (AS MATERIALIZED), not twice where int_order_values reads it.
WITH repeated_keys AS MATERIALIZED (
    SELECT order_id, line_no FROM erp_order_lines GROUP BY order_id, line_no HAVING count(*) > 1
),
copies AS (
    SELECT
        l.*,
        row_number() OVER (
            PARTITION BY order_id, line_no
            ORDER BY sku, category, quantity, unit_price, discount_amount, unit_cost
        ) AS copy_no
    FROM repeated_keys r
    RIGHT SEMI JOIN erp_order_lines l ON l.order_id = r.order_id AND l.line_no = r.line_no
),
lines AS (
    SELECT order_id, line_no, sku, category, quantity, unit_price, discount_amount, unit_cost
    FROM repeated_keys r
    RIGHT ANTI JOIN erp_order_lines l ON l.order_id = r.order_id AND l.line_no = r.line_no
    UNION ALL
    SELECT order_id, line_no, sku, category, quantity, unit_price, discount_amount, unit_cost
    FROM copies
    WHERE copy_no = 1
)
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
FROM lines
