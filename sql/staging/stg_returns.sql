-- ERP returns, one row per returned order line.
SELECT
    return_id,
    order_id,
    line_no,
    return_date,
    quantity,
    refund_amount,
    reason
FROM erp_returns
