-- mart_customer_360: one wide row per person (customer_key) joining every customer mart,
-- so a BI tool needs no joins. Columns: mart_customer_360.yml.
SELECT
    c.customer_key,
    c.records AS identity_records,
    c.sources AS identity_sources,
    ll.customer_type,
    r.first_order_date,
    r.last_order_date,
    r.recency_days,
    r.frequency,
    r.monetary,
    r.r_score,
    r.f_score,
    r.m_score,
    r.rfm_segment,
    a.abc_class,
    a.revenue_share,
    v.clv,
    v.actual_value,
    v.potential_value,
    v.unrealised_potential,
    v.value_tier,
    k.p_alive,
    k.expected_purchases,
    p.profit AS window_profit,
    p.cost_to_serve,
    p.discount_trap,
    w.share_of_wallet,
    w.category_spend_method,
    w.monthly_headroom,
    l.lifecycle_state,
    ll.rung AS loyalty_rung,
    $as_of AS as_of_date
FROM mart_customer c
LEFT JOIN mart_rfm r ON r.customer_key = c.customer_key
LEFT JOIN mart_abc a ON a.customer_key = c.customer_key
LEFT JOIN mart_customer_value v ON v.customer_key = c.customer_key
LEFT JOIN mart_clv k ON k.customer_key = c.customer_key
LEFT JOIN mart_profitability p ON p.customer_key = c.customer_key
LEFT JOIN mart_share_of_wallet w ON w.customer_key = c.customer_key
LEFT JOIN mart_lifecycle l ON l.customer_key = c.customer_key
LEFT JOIN mart_loyalty_ladder ll ON ll.customer_key = c.customer_key
