-- mart_profitability: what each person earned us in the window, after the cost
-- of serving them (activity-based costing). Columns: mart_profitability.yml.
WITH order_totals AS (
    SELECT
        customer_key,
        order_id,
        CASE WHEN delivery = 'home' THEN 1 ELSE 0 END AS home_delivery,
        gross_amount AS gross_revenue,
        discount_amount AS discounts,
        cost_amount AS cost_of_goods,
        discounted_lines,
        lines
    FROM int_order_values
    WHERE CAST(order_date AS INT) > CAST($as_of AS INT) - $window_days
),
sales AS (
    SELECT
        customer_key,
        count(*) AS orders,
        sum(home_delivery) AS deliveries,
        sum(gross_revenue) AS gross_revenue,
        sum(discounts) AS discounts,
        sum(cost_of_goods) AS cost_of_goods,
        CAST(sum(discounted_lines) AS DOUBLE) / sum(lines) AS discounted_line_share
    FROM order_totals
    GROUP BY customer_key
),
contacts AS (
    SELECT m.customer_key, count(*) AS service_contacts
    FROM stg_app_events e
    JOIN int_member_keys m ON m.member_id = e.member_id
    WHERE e.event_type IN ('service_contact', 'complaint')
      AND CAST(e.event_time AS DATE) <= $as_of
      AND CAST(CAST(e.event_time AS DATE) AS INT) > CAST($as_of AS INT) - $window_days
    GROUP BY m.customer_key
),
costed AS (
    SELECT
        s.customer_key,
        s.orders,
        round(s.gross_revenue, 2) AS gross_revenue,
        round(s.discounts, 2) AS discounts,
        round(coalesce(r.window_refunds, 0.0), 2) AS refunds,
        round(s.cost_of_goods, 2) AS cost_of_goods,
        coalesce(r.window_returns, 0) AS returns,
        coalesce(c.service_contacts, 0) AS service_contacts,
        s.deliveries,
        round(
            coalesce(r.window_returns, 0) * $cost_per_return
            + coalesce(c.service_contacts, 0) * $cost_per_service_contact
            + s.deliveries * $cost_per_delivery, 2) AS cost_to_serve,
        s.discounted_line_share
    FROM sales s
    -- Refunds and returned lines of the purchases dated in the window (int_refunds).
    LEFT JOIN int_refunds r ON r.customer_key = s.customer_key
    LEFT JOIN contacts c ON c.customer_key = s.customer_key
)
SELECT
    customer_key,
    orders,
    gross_revenue,
    discounts,
    refunds,
    round(gross_revenue - discounts - refunds, 2) AS net_revenue,
    cost_of_goods,
    round(gross_revenue - discounts - refunds - cost_of_goods, 2) AS gross_margin,
    returns,
    service_contacts,
    deliveries,
    cost_to_serve,
    round(gross_revenue - discounts - refunds - cost_of_goods - cost_to_serve, 2) AS profit,
    round(discounted_line_share, 4) AS discounted_line_share,
    discounted_line_share >= $discount_trap_line_share
        AND gross_revenue - refunds - cost_of_goods > 0
        AND gross_revenue - discounts - refunds - cost_of_goods <= 0 AS discount_trap,
    $as_of AS as_of_date
FROM costed
