-- ERP returns, one row per returned order line (return_id, order_id, line_no; a return
-- without a line number stands for its whole order).
-- A re-exported return line is one return line: exact copies collapse, and of copies that
-- differ the earliest by return date (undated last), then by quantity, refund and reason, is
-- kept, as a whole (a row_number over the key: see stg_orders).
SELECT
    return_id,
    order_id,
    line_no,
    return_date,
    quantity,
    refund_amount,
    reason
FROM (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY return_id, order_id, line_no
            ORDER BY return_date, quantity, refund_amount, reason
        ) AS copy_no
    FROM erp_returns
) r
WHERE copy_no = 1
