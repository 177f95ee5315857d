-- mart_winback: profitable dormant or lost ERP customers whose loyalty-app consent allows
-- contact, ranked by lifetime profit. No e-mail, phone, name or address: the CRM tool looks
-- the contact details up by customer_id. Columns and definitions: mart_winback.yml.
WITH consent AS (
    -- Consent of the loyalty member whose member_id is the customer's loyalty_id; a flag
    -- counts only when every record of that link says true (unknown = no consent).
    SELECT
        c.customer_id,
        bool_and(coalesce(m.consent_email, false)) AS may_email,
        bool_and(coalesce(m.consent_sms, false)) AS may_sms
    FROM stg_customers c
    JOIN stg_members m ON m.member_id = c.loyalty_id
    GROUP BY c.customer_id
),
candidates AS (
    SELECT
        l.customer_id,
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
    JOIN consent c ON c.customer_id = l.customer_id
    LEFT JOIN mart_rfm r ON r.customer_id = l.customer_id
    WHERE l.lifecycle_state IN ('dormant', 'lost')
      AND l.profit > $winback_min_profit
      AND (c.may_email OR c.may_sms)
)
SELECT
    CAST(row_number() OVER (ORDER BY profit DESC, customer_id) AS BIGINT) AS winback_rank,
    customer_id,
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
