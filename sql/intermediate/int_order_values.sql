-- Completed orders up to the as-of date with their line totals, one row per order: the
-- purchases, whose completed orders and net revenue every mart reads here. The order-line
-- join and the person (customer_key) of the ordering ERP customer happen here once; staging
-- keeps one copy of a re-exported order or line, so none is counted twice.
--
-- Shaped for speed: the lines are totalled per order_id first (one short key), and the
-- order header, one row per order_id in stg_orders, joins those totals. Grouping the joined
-- rows by every header column instead gives the same rows but hashes eight text keys per
-- line.
WITH line_totals AS (
    SELECT
        order_id,
        sum(gross_amount) AS gross_amount,
        sum(coalesce(discount_amount, 0.0)) AS discount_amount,
        sum(net_amount) AS net_amount,
        sum(coalesce(cost_amount, 0.0)) AS cost_amount,
        count(*) AS lines,
        sum(CASE WHEN coalesce(discount_amount, 0.0) > 0 THEN 1 ELSE 0 END) AS discounted_lines
    FROM stg_order_lines
    GROUP BY order_id
)
SELECT
    o.order_id,
    k.customer_key,
    o.customer_id,
    o.order_date,
    o.channel,
    o.store_id,
    o.delivery,
    o.payment_status,
    t.gross_amount,
    t.discount_amount,
    t.net_amount,
    t.cost_amount,
    t.lines,
    t.discounted_lines
FROM stg_orders o
JOIN line_totals t ON t.order_id = o.order_id
-- int_identity_erp gives every ordering customer number an identity record, so no order
-- is lost here.
JOIN int_erp_keys k ON k.customer_id = o.customer_id
WHERE o.status = 'completed'
  AND o.order_date <= $as_of
