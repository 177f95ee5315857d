-- mart_rfm: recency, frequency and monetary value per person, scored 1-5 by
-- quintile, with the named segment from the rfm_segments seed. Columns: mart_rfm.yml.
WITH order_values AS (
    SELECT order_id, customer_key, order_date, net_amount AS order_revenue
    FROM int_order_values
),
per_customer AS (
    SELECT
        customer_key,
        min(order_date) AS first_order_date,
        max(order_date) AS last_order_date,
        -- order_values has one row per order, so counting rows counts distinct orders.
        count(CASE
            WHEN CAST(order_date AS INT) > CAST($as_of AS INT) - $window_days THEN 1
        END) AS frequency,
        round(coalesce(sum(CASE
            WHEN CAST(order_date AS INT) > CAST($as_of AS INT) - $window_days THEN order_revenue
        END), 0.0), 2) AS monetary
    FROM order_values
    GROUP BY customer_key
),
scored AS (
    SELECT
        customer_key,
        first_order_date,
        last_order_date,
        CAST($as_of AS INT) - CAST(last_order_date AS INT) AS recency_days,
        frequency,
        monetary,
        CAST(ntile(5) OVER (ORDER BY CAST($as_of AS INT) - CAST(last_order_date AS INT) DESC, customer_key) AS INT) AS r_score,
        CAST(ntile(5) OVER (ORDER BY frequency, customer_key) AS INT) AS f_score,
        CAST(ntile(5) OVER (ORDER BY monetary, customer_key) AS INT) AS m_score
    FROM per_customer
),
segmented AS (
    SELECT
        s.*,
        CAST(ceil((s.f_score + s.m_score) / 2.0) AS INT) AS fm_score,
        seg.segment,
        -- The seed can be replaced: rules of equal priority fall back to the segment name.
        row_number() OVER (PARTITION BY s.customer_key ORDER BY seg.priority, seg.segment) AS rule_rank
    FROM scored s
    LEFT JOIN rfm_segments seg
      ON s.r_score BETWEEN seg.r_min AND seg.r_max
     AND CAST(ceil((s.f_score + s.m_score) / 2.0) AS INT) BETWEEN seg.fm_min AND seg.fm_max
)
SELECT
    customer_key,
    first_order_date,
    last_order_date,
    recency_days,
    frequency,
    monetary,
    r_score,
    f_score,
    m_score,
    fm_score,
    CAST(r_score AS VARCHAR) || CAST(f_score AS VARCHAR) || CAST(m_score AS VARCHAR) AS rfm_cell,
    coalesce(segment, 'Unclassified') AS rfm_segment,
    $as_of AS as_of_date
FROM segmented
WHERE rule_rank = 1
