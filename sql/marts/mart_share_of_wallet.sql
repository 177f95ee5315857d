-- mart_share_of_wallet: our share of each person's monthly category spend, with the
-- category spend estimated three ways and the method used recorded per person.
-- Columns: mart_share_of_wallet.yml.
WITH our_spend AS (
    SELECT
        customer_key,
        sum(net_amount) / ($window_days / 30.4375) AS our_monthly_spend
    FROM int_order_values
    WHERE CAST(order_date AS INT) > CAST($as_of AS INT) - $window_days
    GROUP BY customer_key
),
latest_survey AS (
    -- The latest answer (int_survey_answers, one row per response_id) of any loyalty member
    -- record of the person: by answer date, then the highest response_id.
    SELECT customer_key, category_spend_monthly, brands_used, our_rank
    FROM (
        SELECT
            customer_key, category_spend_monthly, brands_used, our_rank,
            row_number() OVER (PARTITION BY customer_key ORDER BY answered_on DESC, response_id DESC) AS rn
        FROM int_survey_answers
        WHERE customer_key IS NOT NULL
    ) s
    WHERE rn = 1
),
profile AS (
    -- Age band and region from the person's golden record. The age is counted in calendar
    -- years (one more on each birthday), not in days over 365.25, which falls short of a
    -- birthday when the years between hold fewer leap days.
    SELECT
        customer_key,
        CASE
            WHEN age_years IS NULL THEN 'unknown'
            WHEN age_years < 30 THEN '18-29'
            WHEN age_years < 45 THEN '30-44'
            WHEN age_years < 60 THEN '45-59'
            ELSE '60+'
        END AS age_band,
        -- Danish postcodes below 3000 are the capital region.
        CASE WHEN TRY_CAST(postcode AS INT) < 3000 THEN 'capital' ELSE 'other' END AS region
    FROM (
        SELECT
            customer_key,
            date_part('year', $as_of) - date_part('year', birth_date)
                - CASE
                    WHEN date_part('month', $as_of) * 100 + date_part('day', $as_of)
                       < date_part('month', birth_date) * 100 + date_part('day', birth_date)
                    THEN 1 ELSE 0
                  END AS age_years,
            postcode
        FROM (SELECT customer_key, TRY_CAST(birth_date AS DATE) AS birth_date, postcode FROM identity_golden) b
    ) g
),
estimates AS (
    SELECT
        p.customer_key,
        s.our_monthly_spend,
        sv.category_spend_monthly AS survey_spend,
        -- Wallet Allocation Rule (Keiningham et al.): share = (1 - r / (n + 1)) x 2 / n.
        CASE
            WHEN sv.brands_used >= 1 AND sv.our_rank BETWEEN 1 AND sv.brands_used
            THEN (1.0 - CAST(sv.our_rank AS DOUBLE) / (sv.brands_used + 1)) * 2.0 / sv.brands_used
        END AS war_share,
        ref.monthly_category_spend AS reference_spend,
        p.age_band,
        p.region
    FROM our_spend s
    JOIN profile p ON p.customer_key = s.customer_key
    LEFT JOIN latest_survey sv ON sv.customer_key = p.customer_key
    LEFT JOIN category_spend_reference ref ON ref.age_band = p.age_band AND ref.region = p.region
),
chosen AS (
    SELECT
        *,
        CASE
            WHEN survey_spend > 0 THEN 'survey'
            WHEN war_share > 0 AND our_monthly_spend > 0 THEN 'wallet_allocation_rule'
            WHEN reference_spend > 0 THEN 'reference_table'
        END AS method
    FROM estimates
)
SELECT
    customer_key,
    round(our_monthly_spend, 2) AS our_monthly_spend,
    method AS category_spend_method,
    round(CASE method
        WHEN 'survey' THEN survey_spend
        WHEN 'wallet_allocation_rule' THEN our_monthly_spend / war_share
        WHEN 'reference_table' THEN reference_spend
    END, 2) AS category_monthly_spend,
    round(survey_spend, 2) AS survey_monthly_spend,
    round(war_share, 4) AS wallet_allocation_share,
    round(reference_spend, 2) AS reference_monthly_spend,
    round(our_monthly_spend / CASE method
        WHEN 'survey' THEN survey_spend
        WHEN 'wallet_allocation_rule' THEN our_monthly_spend / war_share
        WHEN 'reference_table' THEN reference_spend
    END, 4) AS share_of_wallet,
    round(greatest(CASE method
        WHEN 'survey' THEN survey_spend
        WHEN 'wallet_allocation_rule' THEN our_monthly_spend / war_share
        WHEN 'reference_table' THEN reference_spend
    END - our_monthly_spend, 0.0), 2) AS monthly_headroom,
    age_band,
    region,
    $as_of AS as_of_date
FROM chosen
