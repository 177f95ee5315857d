-- mart_clv: predicted customer lifetime value per customer from the BG/NBD and
-- Gamma-Gamma models fitted by the clv_fit step (mart_clv_model). Columns: mart_clv.yml.
SELECT
    s.customer_key,
    s.frequency,
    s.recency,
    s.t,
    s.monetary,
    bgnbd_p_alive(m.r, m.alpha, m.a, m.b, s.frequency, s.recency, s.t) AS p_alive,
    bgnbd_expected_purchases(
        m.r, m.alpha, m.a, m.b, s.frequency, s.recency, s.t,
        $clv_horizon_months * 30.4375 / $clv_time_unit_days
    ) AS expected_purchases,
    gamma_gamma_spend(m.p, m.q, m.gamma, s.frequency, s.monetary) AS expected_spend,
    coalesce(bgnbd_clv(
        m.r, m.alpha, m.a, m.b, s.frequency, s.recency, s.t,
        gamma_gamma_spend(m.p, m.q, m.gamma, s.frequency, s.monetary),
        $clv_margin_rate, $clv_horizon_months, 30.4375 / $clv_time_unit_days, $clv_discount_rate_monthly
    ), 0.0) AS clv,
    $clv_horizon_months AS horizon_months,
    m.bgnbd_converged AND m.gamma_gamma_converged AS model_converged,
    $as_of AS as_of_date
FROM clv_summary s
CROSS JOIN mart_clv_model m
