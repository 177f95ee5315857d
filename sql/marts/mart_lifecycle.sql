-- mart_lifecycle: active / at_risk / dormant / lost per buying person, judged against
-- the customer's own usual gap between purchases, with lifetime revenue, cost, refunds and
-- profit (the win-back list reads them). Columns and definitions: mart_lifecycle.yml.
WITH order_values AS (
    -- A purchase is a completed order on or before the as-of date with at least one order
    -- line, as in mart_rfm.
    SELECT order_id, customer_key, order_date, net_amount AS net_revenue, cost_amount AS cost
    FROM int_order_values
),
purchase_days AS (
    SELECT DISTINCT customer_key, order_date FROM order_values
),
gaps AS (
    -- Days between consecutive distinct purchase days: two orders on one day are one visit.
    SELECT
        customer_key,
        CAST(order_date AS INT)
            - CAST(lag(order_date) OVER (PARTITION BY customer_key ORDER BY order_date) AS INT) AS gap_days
    FROM purchase_days
),
gap_stats AS (
    -- gaps has one row per purchase day, so count(*) counts the distinct purchase days
    -- (count(DISTINCT) per customer does not scale to millions).
    SELECT
        customer_key,
        count(*) AS purchase_days,
        count(gap_days) AS gap_count,
        median(CAST(gap_days AS DOUBLE)) AS median_gap_days
    FROM gaps
    GROUP BY customer_key
),
per_customer AS (
    -- order_values has one row per order, so count(*) counts orders.
    SELECT
        customer_key,
        min(order_date) AS first_order_date,
        max(order_date) AS last_order_date,
        count(*) AS completed_orders,
        sum(net_revenue) AS net_revenue,
        sum(cost) AS cost
    FROM order_values
    GROUP BY customer_key
),
judged AS (
    SELECT
        p.*,
        g.purchase_days,
        CAST($as_of AS INT) - CAST(p.last_order_date AS INT) AS days_since_last_purchase,
        g.median_gap_days,
        CASE
            WHEN g.gap_count = 0 THEN CAST($lifecycle_default_gap_days AS DOUBLE)
            WHEN g.median_gap_days < $lifecycle_min_gap_days THEN CAST($lifecycle_min_gap_days AS DOUBLE)
            ELSE g.median_gap_days
        END AS usual_gap_days,
        CASE
            WHEN g.gap_count = 0 THEN 'default'
            WHEN g.median_gap_days < $lifecycle_min_gap_days THEN 'minimum'
            ELSE 'median'
        END AS usual_gap_basis,
        coalesce(r.refunds, 0.0) AS refunds
    FROM per_customer p
    JOIN gap_stats g ON g.customer_key = p.customer_key
    -- Lifetime refunds of the purchases (int_refunds).
    LEFT JOIN int_refunds r ON r.customer_key = p.customer_key
),
staged AS (
    SELECT
        j.*,
        CASE
            WHEN days_since_last_purchase > $lifecycle_lost_factor * usual_gap_days THEN 'lost'
            WHEN days_since_last_purchase > $lifecycle_dormant_factor * usual_gap_days THEN 'dormant'
            WHEN days_since_last_purchase > $lifecycle_at_risk_factor * usual_gap_days THEN 'at_risk'
            ELSE 'active'
        END AS lifecycle_state,
        -- First day past the threshold of the current state: threshold days are
        -- floor(factor x gap) + 1 after the last purchase.
        CASE
            WHEN days_since_last_purchase > $lifecycle_lost_factor * usual_gap_days
                THEN CAST(floor($lifecycle_lost_factor * usual_gap_days) AS INT) + 1
            WHEN days_since_last_purchase > $lifecycle_dormant_factor * usual_gap_days
                THEN CAST(floor($lifecycle_dormant_factor * usual_gap_days) AS INT) + 1
            WHEN days_since_last_purchase > $lifecycle_at_risk_factor * usual_gap_days
                THEN CAST(floor($lifecycle_at_risk_factor * usual_gap_days) AS INT) + 1
            ELSE 0
        END AS state_offset_days,
        CASE
            WHEN days_since_last_purchase > $lifecycle_lost_factor * usual_gap_days THEN NULL
            WHEN days_since_last_purchase > $lifecycle_dormant_factor * usual_gap_days
                THEN CAST(floor($lifecycle_lost_factor * usual_gap_days) AS INT) + 1
            WHEN days_since_last_purchase > $lifecycle_at_risk_factor * usual_gap_days
                THEN CAST(floor($lifecycle_dormant_factor * usual_gap_days) AS INT) + 1
            ELSE CAST(floor($lifecycle_at_risk_factor * usual_gap_days) AS INT) + 1
        END AS next_offset_days
    FROM judged j
)
SELECT
    customer_key,
    first_order_date,
    last_order_date,
    completed_orders,
    purchase_days,
    days_since_last_purchase,
    round(median_gap_days, 1) AS median_gap_days,
    round(usual_gap_days, 1) AS usual_gap_days,
    usual_gap_basis,
    round(days_since_last_purchase / usual_gap_days, 2) AS gap_ratio,
    lifecycle_state,
    CAST(CAST(last_order_date AS INT) + state_offset_days AS DATE) AS state_since,
    CAST(CAST(last_order_date AS INT) + next_offset_days AS DATE) AS next_state_on,
    round(net_revenue, 2) AS net_revenue,
    round(cost, 2) AS cost,
    round(refunds, 2) AS refunds,
    round(net_revenue - cost - refunds, 2) AS profit,
    $as_of AS as_of_date
FROM staged
