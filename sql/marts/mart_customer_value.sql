-- mart_customer_value: actual and potential value per person and the Peppers & Rogers
-- value tier. Columns: mart_customer_value.yml.
WITH lifetime AS (
    SELECT customer_key, sum(net_amount - cost_amount) AS margin
    FROM int_order_values
    GROUP BY customer_key
),
valued AS (
    SELECT
        c.customer_key,
        round(coalesce(lt.margin, 0.0) - coalesce(lr.refunds, 0.0), 2) AS actual_value,
        c.clv,
        round(coalesce(w.category_monthly_spend, 0.0) * $clv_horizon_months * $clv_margin_rate, 2) AS wallet_potential,
        p.profit AS window_profit
    FROM mart_clv c
    LEFT JOIN lifetime lt ON lt.customer_key = c.customer_key
    -- Lifetime refunds of the purchases, as in mart_lifecycle (int_refunds).
    LEFT JOIN int_refunds lr ON lr.customer_key = c.customer_key
    LEFT JOIN mart_share_of_wallet w ON w.customer_key = c.customer_key
    LEFT JOIN mart_profitability p ON p.customer_key = c.customer_key
),
potential AS (
    SELECT
        *,
        round(greatest(clv, wallet_potential), 2) AS potential_value,
        round(greatest(clv, wallet_potential) - actual_value, 2) AS unrealised_potential
    FROM valued
),
thresholds AS (
    -- Tier cutoffs as exact percentiles: aggregates, so no sort of all customers.
    SELECT
        percentile_cont(actual_value, 1.0 - $mvc_share) AS mvc_cutoff,
        percentile_cont(unrealised_potential, 1.0 - $mgc_share) AS mgc_cutoff
    FROM potential
)
SELECT
    p.customer_key,
    p.actual_value,
    round(p.clv, 2) AS clv,
    p.wallet_potential,
    p.potential_value,
    p.unrealised_potential,
    p.window_profit,
    CASE
        WHEN p.window_profit < 0 THEN 'BZ'
        WHEN p.actual_value >= t.mvc_cutoff THEN 'MVC'
        WHEN p.unrealised_potential >= t.mgc_cutoff THEN 'MGC'
        ELSE 'Other'
    END AS value_tier,
    round(t.mvc_cutoff, 2) AS mvc_cutoff,
    round(t.mgc_cutoff, 2) AS mgc_cutoff,
    $as_of AS as_of_date
FROM potential p
CROSS JOIN thresholds t
