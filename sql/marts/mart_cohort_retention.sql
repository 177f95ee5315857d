-- mart_cohort_retention: persons grouped by the month of their first purchase; for
-- every later month up to the as-of month, how many still bought, their share of the cohort,
-- their revenue and the revenue retention against month 0. Columns: mart_cohort_retention.yml.
WITH order_values AS (
    -- A purchase is a completed order on or before the as-of date with at least one line.
    SELECT order_id, customer_key, order_date, net_amount AS net_revenue
    FROM int_order_values
),
month_index AS (
    -- Months counted from year 0 so that offsets are plain differences.
    SELECT
        customer_key,
        net_revenue,
        CAST(date_part('year', order_date) AS BIGINT) * 12 + CAST(date_part('month', order_date) AS BIGINT) - 1 AS month_no
    FROM order_values
),
-- Shaped for speed: the orders are grouped once into customer months, and the tables read
-- more than once below are declared AS MATERIALIZED, so each is computed a single time.
customer_months AS MATERIALIZED (
    -- One row per customer and month, so counting rows counts distinct customers.
    SELECT customer_key, month_no, sum(net_revenue) AS net_revenue
    FROM month_index
    GROUP BY customer_key, month_no
),
first_months AS MATERIALIZED (
    SELECT customer_key, min(month_no) AS cohort_no FROM customer_months GROUP BY customer_key
),
cohorts AS (
    SELECT cohort_no, count(*) AS cohort_customers FROM first_months GROUP BY cohort_no
),
activity AS MATERIALIZED (
    SELECT
        f.cohort_no,
        m.month_no - f.cohort_no AS month_offset,
        count(*) AS active_customers,
        sum(m.net_revenue) AS revenue
    FROM customer_months m
    JOIN first_months f ON f.customer_key = m.customer_key
    GROUP BY f.cohort_no, m.month_no - f.cohort_no
),
as_of_month AS (
    SELECT CAST(date_part('year', $as_of) AS BIGINT) * 12 + CAST(date_part('month', $as_of) AS BIGINT) - 1 AS month_no
),
grid AS (
    -- Every month from the cohort month to the as-of month, bought in or not.
    SELECT c.cohort_no, c.cohort_customers, unnest(generate_series(CAST(0 AS BIGINT), a.month_no - c.cohort_no)) AS month_offset
    FROM cohorts c
    CROSS JOIN as_of_month a
),
filled AS (
    SELECT
        g.cohort_no,
        g.month_offset,
        g.cohort_customers,
        coalesce(a.active_customers, 0) AS active_customers,
        coalesce(a.revenue, 0.0) AS revenue,
        m0.revenue AS month0_revenue
    FROM grid g
    LEFT JOIN activity a ON a.cohort_no = g.cohort_no AND a.month_offset = g.month_offset
    JOIN activity m0 ON m0.cohort_no = g.cohort_no AND m0.month_offset = 0
)
SELECT
    make_date(CAST(cohort_no / 12 AS INT), CAST(cohort_no % 12 + 1 AS INT), 1) AS cohort_month,
    month_offset,
    make_date(CAST((cohort_no + month_offset) / 12 AS INT), CAST((cohort_no + month_offset) % 12 + 1 AS INT), 1) AS activity_month,
    cohort_customers,
    active_customers,
    round(CAST(active_customers AS DOUBLE) / cohort_customers, 4) AS retention_rate,
    round(revenue, 2) AS revenue,
    round(month0_revenue, 2) AS month0_revenue,
    CASE WHEN month0_revenue > 0 THEN round(revenue / month0_revenue, 4) END AS revenue_retention,
    cohort_no + month_offset = (SELECT month_no FROM as_of_month) AS is_partial_month,
    $as_of AS as_of_date
FROM filled
