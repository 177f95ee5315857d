-- ERP order lines with their amounts: gross = quantity x unit price, net = gross - discount,
-- cost = quantity x unit cost.
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
FROM erp_order_lines
