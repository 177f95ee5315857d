-- mart_cx_customers: per buying person, the latest NPS answer, the lifecycle state,
-- the revenue at risk (revenue of detractors and of at-risk or dormant customers) and the
-- pain points met in the window with their revenue-weighted friction. Sum the columns for
-- totals. Columns and definitions: mart_cx_customers.yml.
WITH nps_answers AS (
    -- Valid NPS answers (0-10, int_survey_answers) of the person's loyalty member records,
    -- newest first.
    SELECT
        customer_key,
        answered_on,
        nps,
        row_number() OVER (PARTITION BY customer_key ORDER BY answered_on DESC, response_id DESC) AS recency_no
    FROM int_survey_answers
    WHERE nps IS NOT NULL
      AND customer_key IS NOT NULL
),
latest_nps AS (
    SELECT customer_key, nps AS latest_nps, answered_on AS latest_nps_on
    FROM nps_answers
    WHERE recency_no = 1
),
pains AS (
    SELECT
        customer_key,
        count(*) AS pain_points,
        count(CASE WHEN touchpoint_type = 'failed_payment' THEN 1 END) AS failed_payments,
        count(CASE WHEN touchpoint_type = 'return' THEN 1 END) AS returns,
        count(CASE WHEN touchpoint_type = 'complaint' THEN 1 END) AS complaints,
        count(CASE WHEN touchpoint_type = 'service_contact' THEN 1 END) AS service_contacts
    FROM mart_touchpoints
    WHERE is_pain_point
      AND customer_key IS NOT NULL
      AND CAST(occurred_on AS INT) > CAST($as_of AS INT) - $window_days
    GROUP BY customer_key
),
joined AS (
    SELECT
        l.customer_key,
        l.lifecycle_state,
        r.rfm_segment,
        r.monetary AS window_revenue,
        n.latest_nps,
        n.latest_nps_on,
        CASE
            WHEN n.latest_nps >= 9 THEN 'promoter'
            WHEN n.latest_nps >= 7 THEN 'passive'
            WHEN n.latest_nps >= 0 THEN 'detractor'
        END AS nps_group,
        coalesce(n.latest_nps <= 6, false) AS is_detractor,
        l.lifecycle_state IN ('at_risk', 'dormant') AS is_lifecycle_risk,
        coalesce(p.pain_points, 0) AS pain_points,
        coalesce(p.failed_payments, 0) AS failed_payments,
        coalesce(p.returns, 0) AS returns,
        coalesce(p.complaints, 0) AS complaints,
        coalesce(p.service_contacts, 0) AS service_contacts
    FROM mart_lifecycle l
    JOIN mart_rfm r ON r.customer_key = l.customer_key
    LEFT JOIN latest_nps n ON n.customer_key = l.customer_key
    LEFT JOIN pains p ON p.customer_key = l.customer_key
)
SELECT
    customer_key,
    lifecycle_state,
    rfm_segment,
    window_revenue,
    latest_nps,
    latest_nps_on,
    nps_group,
    CASE
        WHEN is_detractor AND is_lifecycle_risk THEN 'detractor_and_lifecycle'
        WHEN is_detractor THEN 'detractor'
        WHEN is_lifecycle_risk THEN 'lifecycle'
    END AS risk_reason,
    CASE WHEN is_detractor OR is_lifecycle_risk THEN window_revenue ELSE 0.0 END AS revenue_at_risk,
    pain_points,
    failed_payments,
    returns,
    complaints,
    service_contacts,
    round(pain_points * window_revenue, 2) AS friction_weight,
    $as_of AS as_of_date
FROM joined
