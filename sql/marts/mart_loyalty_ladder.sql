-- mart_loyalty_ladder: each person's rung on the loyalty ladder (prospect, customer,
-- client, supporter, advocate, partner), the date each rung was reached where the data
-- tells, and the movement since the previous published run. Columns: mart_loyalty_ladder.yml.
WITH erp_records AS (
    -- ERP master records known on the as-of date, with their person.
    SELECT
        k.customer_key,
        c.customer_id,
        c.created_on,
        c.customer_type,
        upper(trim(c.customer_type)) = upper($partner_customer_type) AND nullif(trim(c.contract_id), '') IS NOT NULL AS is_partner
    FROM stg_customers c
    JOIN int_erp_keys k ON k.customer_id = c.customer_id
    WHERE coalesce(c.created_on, $as_of) <= $as_of
),
-- Shaped for speed: the per-person tables read twice below (by the population and by the
-- facts) are declared AS MATERIALIZED, so each is computed once, not at every reference.
person_records AS MATERIALIZED (
    -- One row per person with ERP records: the earliest creation, the customer type of the
    -- newest record, and partner when any record is a partner account.
    SELECT
        customer_key,
        min(created_on) AS created_on,
        max(CASE WHEN record_rank = 1 THEN customer_type END) AS customer_type,
        bool_or(coalesce(is_partner, false)) AS is_partner
    FROM (
        SELECT
            *,
            -- stg_customers has one row per customer_id, so this order is total.
            row_number() OVER (PARTITION BY customer_key ORDER BY created_on DESC NULLS LAST, customer_id) AS record_rank
        FROM erp_records
    ) r
    GROUP BY customer_key
),
members AS MATERIALIZED (
    -- Loyalty-app members who had joined on the as-of date, with their person.
    SELECT k.customer_key, min(m.joined_on) AS joined_on
    FROM stg_members m
    JOIN int_member_keys k ON k.member_id = m.member_id
    WHERE coalesce(m.joined_on, $as_of) <= $as_of
    GROUP BY k.customer_key
),
order_values AS (
    SELECT order_id, customer_key, order_date FROM int_order_values
),
numbered_orders AS (
    SELECT
        customer_key,
        order_date,
        row_number() OVER (PARTITION BY customer_key ORDER BY order_date, order_id) AS order_no
    FROM order_values
),
purchases AS MATERIALIZED (
    SELECT
        customer_key,
        count(*) AS completed_orders,
        min(order_date) AS first_order_date,
        min(CASE WHEN order_no = $client_min_orders THEN order_date END) AS client_order_date
    FROM numbered_orders
    GROUP BY customer_key
),
population AS (
    -- Persons with an ERP record or a loyalty-app membership known on the as-of date, and
    -- buyers whose master record is missing.
    SELECT customer_key FROM person_records
    UNION
    SELECT customer_key FROM members
    UNION
    SELECT customer_key FROM purchases
),
app_events AS (
    SELECT
        member_id,
        CAST(event_time AT TIME ZONE $report_time_zone AS DATE) AS event_date,
        lower(trim(event_type)) AS event_type
    FROM stg_app_events
    WHERE CAST(event_time AT TIME ZONE $report_time_zone AS DATE) <= $as_of
),
app_activity AS (
    -- Per person, over the events of all their loyalty member ids.
    SELECT
        k.customer_key,
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
    FROM app_events e
    JOIN int_member_keys k ON k.member_id = e.member_id
    GROUP BY k.customer_key
),
nps_answers AS (
    -- Per person, the NPS answers (0-10, int_survey_answers) of all their loyalty member ids
    -- in one sequence.
    SELECT
        customer_key,
        answered_on,
        nps,
        row_number() OVER (PARTITION BY customer_key ORDER BY answered_on, response_id) AS answer_no
    FROM int_survey_answers
    WHERE nps IS NOT NULL
      AND customer_key IS NOT NULL
),
nps_runs AS (
    SELECT
        customer_key,
        max(answer_no) AS last_answer_no,
        max(CASE WHEN nps < 9 THEN answer_no END) AS last_non_promoter_no
    FROM nps_answers
    GROUP BY customer_key
),
nps_status AS (
    -- The latest answer decides; a promoter since the first answer of the unbroken run of
    -- promoter answers that ends with the latest one.
    SELECT
        a.customer_key,
        max(CASE WHEN a.answer_no = r.last_answer_no THEN a.nps END) AS latest_nps,
        max(CASE WHEN a.answer_no = r.last_answer_no THEN a.answered_on END) AS latest_nps_on,
        min(CASE WHEN a.answer_no > coalesce(r.last_non_promoter_no, 0) THEN a.answered_on END) AS promoter_since
    FROM nps_answers a
    JOIN nps_runs r ON r.customer_key = a.customer_key
    GROUP BY a.customer_key
),
facts AS (
    SELECT
        p.customer_key,
        CASE
            WHEN m.joined_on IS NULL THEN c.created_on
            WHEN c.created_on IS NULL OR m.joined_on < c.created_on THEN m.joined_on
            ELSE c.created_on
        END AS created_on,
        c.customer_type,
        m.customer_key IS NOT NULL AS has_loyalty_id,
        c.is_partner,
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
    LEFT JOIN person_records c ON c.customer_key = p.customer_key
    LEFT JOIN members m ON m.customer_key = p.customer_key
    LEFT JOIN purchases o ON o.customer_key = p.customer_key
    LEFT JOIN app_activity a ON a.customer_key = p.customer_key
    LEFT JOIN nps_status n ON n.customer_key = p.customer_key
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
        customer_key,
        CASE WHEN as_of_date < $as_of THEN rung ELSE previous_rung END AS rung,
        CASE WHEN as_of_date < $as_of THEN rung_level ELSE previous_rung_level END AS rung_level,
        CASE WHEN as_of_date < $as_of THEN as_of_date ELSE previous_as_of_date END AS as_of_date
    FROM previous_loyalty_ladder
    WHERE as_of_date <= $as_of
)
SELECT
    r.customer_key,
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
LEFT JOIN previous p ON p.customer_key = r.customer_key
