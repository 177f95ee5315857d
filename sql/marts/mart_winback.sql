-- mart_winback: profitable dormant or lost persons whose loyalty-app consent allows
-- contact, ranked by lifetime profit. No e-mail, phone, name or address: the CRM tool looks
-- the contact details up by customer_key. Columns and definitions: mart_winback.yml.
WITH consent AS (
    -- Consent from the loyalty-app member records of the person; a flag counts only when
    -- every member record of the person says true (unknown = no consent).
    SELECT
        k.customer_key,
        bool_and(coalesce(m.consent_email, false)) AS may_email,
        bool_and(coalesce(m.consent_sms, false)) AS may_sms
    FROM stg_members m
    JOIN int_member_keys k ON k.member_id = m.member_id
    GROUP BY k.customer_key
),
candidates AS (
    SELECT
        l.customer_key,
        l.lifecycle_state,
        l.last_order_date,
        l.days_since_last_purchase,
        l.usual_gap_days,
        l.completed_orders,
        l.net_revenue,
        l.profit,
        c.may_email,
        c.may_sms,
        r.rfm_segment
    FROM mart_lifecycle l
    JOIN consent c ON c.customer_key = l.customer_key
    LEFT JOIN mart_rfm r ON r.customer_key = l.customer_key
    WHERE l.lifecycle_state IN ('dormant', 'lost')
      AND l.profit > $winback_min_profit
      AND (c.may_email OR c.may_sms)
)
SELECT
    CAST(row_number() OVER (ORDER BY profit DESC, customer_key) AS BIGINT) AS winback_rank,
    customer_key,
    lifecycle_state,
    last_order_date,
    days_since_last_purchase,
    usual_gap_days,
    completed_orders,
    net_revenue,
    profit,
    may_email,
    may_sms,
    CASE WHEN may_email THEN 'email' ELSE 'sms' END AS preferred_channel,
    coalesce(rfm_segment, 'Unclassified') AS rfm_segment,
    $as_of AS as_of_date
FROM candidates
