-- mart_abc: Pareto (ABC) class per person by net revenue in the window.
-- Columns: mart_abc.yml.
WITH revenue AS (
    SELECT
        o.customer_key,
        round(coalesce(sum(CASE
            WHEN CAST(o.order_date AS INT) > CAST($as_of AS INT) - $window_days THEN o.net_amount
        END), 0.0), 2) AS revenue
    FROM int_order_values o
    GROUP BY o.customer_key
),
ranked AS (
    SELECT
        customer_key,
        revenue,
        row_number() OVER (ORDER BY revenue DESC, customer_key) AS revenue_rank,
        sum(revenue) OVER (ORDER BY revenue DESC, customer_key ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cumulative_revenue,
        sum(revenue) OVER () AS total_revenue
    FROM revenue
)
SELECT
    customer_key,
    revenue,
    revenue_rank,
    CASE WHEN total_revenue > 0 THEN revenue / total_revenue ELSE 0.0 END AS revenue_share,
    CASE WHEN total_revenue > 0 THEN cumulative_revenue / total_revenue ELSE 0.0 END AS cumulative_share,
    CASE
        WHEN total_revenue > 0 AND (cumulative_revenue - revenue) / total_revenue < $abc_a_cutoff THEN 'A'
        WHEN total_revenue > 0 AND (cumulative_revenue - revenue) / total_revenue < $abc_b_cutoff THEN 'B'
        ELSE 'C'
    END AS abc_class,
    $as_of AS as_of_date
FROM ranked
