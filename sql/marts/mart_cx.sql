-- mart_cx: customer-experience scores per month (NPS, CSAT, CES from the loyalty-app
-- surveys) in total, per survey touchpoint and per RFM segment, with the month's pain
-- points and a revenue-weighted friction index. Columns and definitions: mart_cx.yml.
-- Shaped for speed: `answers` and `pains` are read by several breakdowns below, so they are
-- declared AS MATERIALIZED and computed once (the runner writes each as a table of the step)
-- instead of at every reference.
WITH answers AS MATERIALIZED (
    -- Survey answers up to the as-of date with validated scores (int_survey_answers) and the
    -- RFM segment of the answering member's person.
    SELECT
        CAST(date_trunc('month', a.answered_on) AS DATE) AS month,
        a.member_id,
        coalesce(nullif(trim(a.touchpoint), ''), '(none)') AS touchpoint,
        CASE
            WHEN a.customer_key IS NULL THEN '(not linked)'
            ELSE coalesce(r.rfm_segment, '(no purchases)')
        END AS rfm_segment,
        a.nps,
        a.csat,
        a.ces
    FROM int_survey_answers a
    LEFT JOIN mart_rfm r ON r.customer_key = a.customer_key
),
answer_rows AS (
    SELECT month, 'total' AS breakdown, 'All' AS breakdown_value, member_id, nps, csat, ces FROM answers
    UNION ALL
    SELECT month, 'touchpoint', touchpoint, member_id, nps, csat, ces FROM answers
    UNION ALL
    SELECT month, 'rfm_segment', rfm_segment, member_id, nps, csat, ces FROM answers
),
scores AS (
    SELECT
        month,
        breakdown,
        breakdown_value,
        count(*) AS survey_answers,
        count(DISTINCT member_id) AS respondents,
        count(nps) AS nps_answers,
        count(CASE WHEN nps >= 9 THEN 1 END) AS promoters,
        count(CASE WHEN nps BETWEEN 7 AND 8 THEN 1 END) AS passives,
        count(CASE WHEN nps <= 6 THEN 1 END) AS detractors,
        count(csat) AS csat_answers,
        count(CASE WHEN csat >= 4 THEN 1 END) AS csat_satisfied,
        count(ces) AS ces_answers,
        avg(CAST(ces AS DOUBLE)) AS ces_mean
    FROM answer_rows
    GROUP BY month, breakdown, breakdown_value
),
weights AS (
    -- A customer's weight is the net revenue of the window ending on the as-of date
    -- (mart_rfm.monetary); customers without purchases weigh 0.
    SELECT customer_key, rfm_segment, monetary FROM mart_rfm
),
pains AS MATERIALIZED (
    SELECT
        CAST(date_trunc('month', t.occurred_on) AS DATE) AS month,
        t.customer_key,
        t.touchpoint_type,
        CASE
            WHEN t.customer_key IS NULL THEN '(not linked)'
            ELSE coalesce(w.rfm_segment, '(no purchases)')
        END AS rfm_segment,
        coalesce(w.monetary, 0.0) AS weight
    FROM mart_touchpoints t
    LEFT JOIN weights w ON w.customer_key = t.customer_key
    WHERE t.is_pain_point
),
pain_rows AS (
    SELECT month, 'total' AS breakdown, 'All' AS breakdown_value, customer_key, touchpoint_type, weight FROM pains
    UNION ALL
    SELECT month, 'rfm_segment', rfm_segment, customer_key, touchpoint_type, weight FROM pains
),
pain_customers AS (
    SELECT month, breakdown, breakdown_value, sum(weight) AS revenue_with_pain_points, count(*) AS customers_with_pain_points
    FROM (
        SELECT DISTINCT month, breakdown, breakdown_value, customer_key, weight
        FROM pain_rows
        WHERE customer_key IS NOT NULL
    ) d
    GROUP BY month, breakdown, breakdown_value
),
pain_totals AS (
    SELECT
        month,
        breakdown,
        breakdown_value,
        count(*) AS pain_points,
        count(CASE WHEN touchpoint_type = 'failed_payment' THEN 1 END) AS failed_payments,
        count(CASE WHEN touchpoint_type = 'return' THEN 1 END) AS returns,
        count(CASE WHEN touchpoint_type = 'complaint' THEN 1 END) AS complaints,
        count(CASE WHEN touchpoint_type = 'service_contact' THEN 1 END) AS service_contacts,
        sum(weight) AS weighted_pain_points
    FROM pain_rows
    GROUP BY month, breakdown, breakdown_value
),
revenue_base AS (
    SELECT 'total' AS breakdown, 'All' AS breakdown_value, sum(monetary) AS revenue FROM weights
    UNION ALL
    SELECT 'rfm_segment', rfm_segment, sum(monetary) FROM weights GROUP BY rfm_segment
),
keys AS (
    SELECT month, breakdown, breakdown_value FROM scores
    UNION
    SELECT month, breakdown, breakdown_value FROM pain_totals
)
SELECT
    k.month,
    k.breakdown,
    k.breakdown_value,
    coalesce(s.survey_answers, 0) AS survey_answers,
    coalesce(s.respondents, 0) AS respondents,
    coalesce(s.nps_answers, 0) AS nps_answers,
    coalesce(s.promoters, 0) AS promoters,
    coalesce(s.passives, 0) AS passives,
    coalesce(s.detractors, 0) AS detractors,
    CASE WHEN s.nps_answers > 0 THEN round(100.0 * (s.promoters - s.detractors) / s.nps_answers, 1) END AS nps,
    coalesce(s.csat_answers, 0) AS csat_answers,
    coalesce(s.csat_satisfied, 0) AS csat_satisfied,
    CASE WHEN s.csat_answers > 0 THEN round(100.0 * s.csat_satisfied / s.csat_answers, 1) END AS csat,
    coalesce(s.ces_answers, 0) AS ces_answers,
    round(s.ces_mean, 2) AS ces,
    CASE WHEN k.breakdown <> 'touchpoint' THEN coalesce(p.pain_points, 0) END AS pain_points,
    CASE WHEN k.breakdown <> 'touchpoint' THEN coalesce(p.failed_payments, 0) END AS failed_payments,
    CASE WHEN k.breakdown <> 'touchpoint' THEN coalesce(p.returns, 0) END AS returns,
    CASE WHEN k.breakdown <> 'touchpoint' THEN coalesce(p.complaints, 0) END AS complaints,
    CASE WHEN k.breakdown <> 'touchpoint' THEN coalesce(p.service_contacts, 0) END AS service_contacts,
    CASE WHEN k.breakdown <> 'touchpoint' THEN coalesce(c.customers_with_pain_points, 0) END AS customers_with_pain_points,
    CASE WHEN k.breakdown <> 'touchpoint' THEN round(coalesce(c.revenue_with_pain_points, 0.0), 2) END AS revenue_with_pain_points,
    CASE
        WHEN k.breakdown <> 'touchpoint' AND b.revenue > 0
            THEN round(100.0 * coalesce(p.weighted_pain_points, 0.0) / b.revenue, 2)
    END AS friction_index,
    $as_of AS as_of_date
FROM keys k
LEFT JOIN scores s ON s.month = k.month AND s.breakdown = k.breakdown AND s.breakdown_value = k.breakdown_value
LEFT JOIN pain_totals p ON p.month = k.month AND p.breakdown = k.breakdown AND p.breakdown_value = k.breakdown_value
LEFT JOIN pain_customers c ON c.month = k.month AND c.breakdown = k.breakdown AND c.breakdown_value = k.breakdown_value
LEFT JOIN revenue_base b ON b.breakdown = k.breakdown AND b.breakdown_value = k.breakdown_value
