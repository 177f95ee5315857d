-- The per-customer summary the BG/NBD and Gamma-Gamma models are fitted on, in units
-- of $clv_time_unit_days days (7 = weeks):
--   frequency = purchase days after the first one (repeat purchases),
--   recency   = time from the first to the last purchase day,
--   t         = time from the first purchase day to the as-of date (the customer's age),
--   monetary  = mean amount of the repeat purchase days (0 without repeats).
WITH firsts AS (
    SELECT customer_key, min(purchase_date) AS first_date
    FROM clv_transactions
    GROUP BY customer_key
)
SELECT
    t.customer_key,
    CAST(count(*) - 1 AS DOUBLE) AS frequency,
    CAST(CAST(max(t.purchase_date) AS INT) - CAST(f.first_date AS INT) AS DOUBLE) / $clv_time_unit_days AS recency,
    CAST(CAST($as_of AS INT) - CAST(f.first_date AS INT) AS DOUBLE) / $clv_time_unit_days AS t,
    coalesce(avg(CASE WHEN t.purchase_date > f.first_date THEN t.amount END), 0.0) AS monetary,
    sum(t.amount) AS total_amount,
    f.first_date,
    max(t.purchase_date) AS last_date
FROM clv_transactions t
JOIN firsts f ON f.customer_key = t.customer_key
GROUP BY t.customer_key, f.first_date
