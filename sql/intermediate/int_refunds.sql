-- int_refunds: refunds per person, the one definition the marts use. A refund is a returned
-- line (stg_returns) of a purchase (int_order_values: a completed order up to the as-of date
-- with at least one line), dated by its return date or, for a return without one, by the
-- order date, and counted when that date is on or before the as-of date. Lifetime refunds
-- (mart_lifecycle, mart_customer_value) and those of the window (mart_profitability) are
-- sums of the same rows. Columns and definitions: int_refunds.yml.
WITH refunds AS (
    SELECT
        v.customer_key,
        coalesce(r.return_date, v.order_date) AS refunded_on,
        coalesce(r.refund_amount, 0.0) AS refund_amount
    FROM stg_returns r
    JOIN int_order_values v ON v.order_id = r.order_id
    WHERE coalesce(r.return_date, v.order_date) <= $as_of
)
SELECT
    customer_key,
    count(*) AS returns,
    sum(refund_amount) AS refunds,
    count(CASE WHEN CAST(refunded_on AS INT) > CAST($as_of AS INT) - $window_days THEN 1 END) AS window_returns,
    coalesce(sum(CASE
        WHEN CAST(refunded_on AS INT) > CAST($as_of AS INT) - $window_days THEN refund_amount
    END), 0.0) AS window_refunds
FROM refunds
GROUP BY customer_key
