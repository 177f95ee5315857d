-- mart_loyalty_ladder: each ERP customer's rung on the loyalty ladder (prospect, customer,
-- client, supporter, advocate, partner), the date each rung was reached where the data
-- tells, and the movement since the previous published run. Columns: mart_loyalty_ladder.yml.
WITH customer_records AS (
    SELECT
        customer_id,
        created_on,
        loyalty_id,
        customer_type,
        contract_id,
        row_number() OVER (
            PARTITION BY customer_id
            ORDER BY created_on DESC NULLS LAST, loyalty_id NULLS LAST, customer_type NULLS LAST, contract_id NULLS LAST
        ) AS record_rank
    FROM stg_customers
    WHERE coalesce(created_on, $as_of) <= $as_of
),
order_values AS (
    -- A purchase is a completed order on or before the as-of date with at least one line.
    SELECT o.order_id, o.customer_id, o.order_date
    FROM stg_orders o
    JOIN stg_order_lines l ON l.order_id = o.order_id
    WHERE o.status = 'completed'
      AND o.order_date <= $as_of
    GROUP BY o.order_id, o.customer_id, o.order_date
),
numbered_orders AS (
    SELECT
        customer_id,
        order_date,
        row_number() OVER (PARTITION BY customer_id ORDER BY order_date, order_id) AS order_no
    FROM order_values
),
purchases AS (
    SELECT
        customer_id,
        count(*) AS completed_orders,
        min(order_date) AS first_order_date,
        min(CASE WHEN order_no = $client_min_orders THEN order_date END) AS client_order_date
    FROM numbered_orders
    GROUP BY customer_id
),
population AS (
    -- ERP customers known on the as-of date, and buyers whose master record is missing.
    SELECT customer_id FROM customer_records WHERE record_rank = 1
    UNION
    SELECT customer_id FROM purchases
),
app_events AS (
    -- Filters on export columns come before the deduplicating window (see mart_touchpoints).
    SELECT
        member_id,
        event_date,
        event_type,
        row_number() OVER (PARTITION BY event_id ORDER BY event_time, member_id, event_type) AS copy_no
    FROM (
        SELECT
            event_id,
            member_id,
            event_time,
            CAST(event_time AT TIME ZONE $report_time_zone AS DATE) AS event_date,
            lower(trim(event_type)) AS event_type
        FROM stg_app_events
        WHERE CAST(event_time AT TIME ZONE $report_time_zone AS DATE) <= $as_of
    ) e
),
app_activity AS (
    SELECT
        member_id,
        count(CASE WHEN CAST(event_date AS INT) > CAST($as_of AS INT) - $supporter_active_days THEN 1 END) AS app_events_in_window,
        min(CASE WHEN CAST(event_date AS INT) > CAST($as_of AS INT) - $supporter_active_days THEN event_date END) AS first_app_event_in_window,
        count(CASE
            WHEN event_type = 'referral_sent'
             AND CAST(event_date AS INT) > CAST($as_of AS INT) - $advocate_referral_days THEN 1
        END) AS referrals_in_window,
        min(CASE
            WHEN event_type = 'referral_sent'
             AND CAST(event_date AS INT) > CAST($as_of AS INT) - $advocate_referral_days THEN event_date
        END) AS first_referral_in_window
    FROM app_events
    WHERE copy_no = 1
    GROUP BY member_id
),
nps_answers AS (
    SELECT
        member_id,
        answered_on,
        nps,
        row_number() OVER (PARTITION BY member_id ORDER BY answered_on, response_id) AS answer_no
    FROM (
        SELECT
            response_id,
            member_id,
            answered_on,
            nps,
            row_number() OVER (PARTITION BY response_id ORDER BY answered_on, member_id) AS copy_no
        FROM stg_survey_answers
        WHERE nps BETWEEN 0 AND 10
          AND answered_on <= $as_of
    ) a
    WHERE copy_no = 1
),
nps_runs AS (
    SELECT
        member_id,
        max(answer_no) AS last_answer_no,
        max(CASE WHEN nps < 9 THEN answer_no END) AS last_non_promoter_no
    FROM nps_answers
    GROUP BY member_id
),
nps_status AS (
    -- The latest answer decides; a promoter since the first answer of the unbroken run of
    -- promoter answers that ends with the latest one.
    SELECT
        a.member_id,
        max(CASE WHEN a.answer_no = r.last_answer_no THEN a.nps END) AS latest_nps,
        max(CASE WHEN a.answer_no = r.last_answer_no THEN a.answered_on END) AS latest_nps_on,
        min(CASE WHEN a.answer_no > coalesce(r.last_non_promoter_no, 0) THEN a.answered_on END) AS promoter_since
    FROM nps_answers a
    JOIN nps_runs r ON r.member_id = a.member_id
    GROUP BY a.member_id
),
facts AS (
    SELECT
        p.customer_id,
        c.created_on,
        c.customer_type,
        CASE WHEN c.customer_id IS NOT NULL THEN c.loyalty_id IS NOT NULL END AS has_loyalty_id,
        upper(trim(c.customer_type)) = upper($partner_customer_type) AND nullif(trim(c.contract_id), '') IS NOT NULL AS is_partner,
        coalesce(o.completed_orders, 0) AS completed_orders,
        o.first_order_date,
        o.client_order_date,
        coalesce(a.app_events_in_window, 0) AS app_events_in_window,
        a.first_app_event_in_window,
        coalesce(a.referrals_in_window, 0) AS referrals_in_window,
        a.first_referral_in_window,
        n.latest_nps,
        n.latest_nps_on,
        CASE WHEN n.latest_nps >= 9 THEN n.promoter_since END AS promoter_since
    FROM population p
    LEFT JOIN customer_records c ON c.customer_id = p.customer_id AND c.record_rank = 1
    LEFT JOIN purchases o ON o.customer_id = p.customer_id
    LEFT JOIN app_activity a ON a.member_id = c.loyalty_id
    LEFT JOIN nps_status n ON n.member_id = c.loyalty_id
),
rungs AS (
    SELECT
        f.*,
        CASE
            WHEN f.promoter_since IS NULL THEN f.first_referral_in_window
            WHEN f.first_referral_in_window IS NULL THEN f.promoter_since
            WHEN f.first_referral_in_window < f.promoter_since THEN f.first_referral_in_window
            ELSE f.promoter_since
        END AS advocate_on,
        CAST(CASE
            WHEN coalesce(f.is_partner, false) THEN 6
            WHEN f.promoter_since IS NOT NULL OR f.referrals_in_window > 0 THEN 5
            WHEN f.app_events_in_window > 0 THEN 4
            WHEN f.completed_orders >= $client_min_orders THEN 3
            WHEN f.completed_orders >= 1 THEN 2
            ELSE 1
        END AS BIGINT) AS rung_level
    FROM facts f
),
previous AS (
    -- The previously published mart. A rerun for the same as-of date keeps the comparison
    -- that run made; a published mart from a later as-of date (a backfill) is ignored.
    SELECT
        customer_id,
        CASE WHEN as_of_date < $as_of THEN rung ELSE previous_rung END AS rung,
        CASE WHEN as_of_date < $as_of THEN rung_level ELSE previous_rung_level END AS rung_level,
        CASE WHEN as_of_date < $as_of THEN as_of_date ELSE previous_as_of_date END AS as_of_date
    FROM previous_loyalty_ladder
    WHERE as_of_date <= $as_of
)
SELECT
    r.customer_id,
    r.customer_type,
    r.has_loyalty_id,
    CASE r.rung_level
        WHEN 6 THEN 'partner'
        WHEN 5 THEN 'advocate'
        WHEN 4 THEN 'supporter'
        WHEN 3 THEN 'client'
        WHEN 2 THEN 'customer'
        ELSE 'prospect'
    END AS rung,
    r.rung_level,
    CASE r.rung_level
        WHEN 6 THEN NULL
        WHEN 5 THEN r.advocate_on
        WHEN 4 THEN r.first_app_event_in_window
        WHEN 3 THEN r.client_order_date
        WHEN 2 THEN r.first_order_date
        ELSE r.created_on
    END AS rung_reached_on,
    r.created_on AS known_since,
    r.first_order_date AS customer_reached_on,
    r.client_order_date AS client_reached_on,
    r.first_app_event_in_window AS supporter_reached_on,
    r.advocate_on AS advocate_reached_on,
    r.completed_orders,
    r.app_events_in_window,
    r.referrals_in_window,
    r.latest_nps,
    r.latest_nps_on,
    coalesce(r.is_partner, false) AS is_partner,
    p.rung AS previous_rung,
    p.rung_level AS previous_rung_level,
    p.as_of_date AS previous_as_of_date,
    CASE
        WHEN p.rung_level IS NULL THEN 'new'
        WHEN r.rung_level > p.rung_level THEN 'up'
        WHEN r.rung_level < p.rung_level THEN 'down'
        ELSE 'same'
    END AS movement,
    $as_of AS as_of_date
FROM rungs r
LEFT JOIN previous p ON p.customer_id = r.customer_id
