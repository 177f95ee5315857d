-- Loyalty-app survey answers, one row per response_id: NPS 0-10, CSAT 1-5, CES 1-7,
-- self-reported monthly category spend, brands used and the rank the member gives us
-- among them (scores as exported; int_survey_answers checks them against their scales).
-- A re-exported answer is one answer: exact copies collapse, and of copies that differ the
-- earliest is kept, then the first by member and by the other columns in their export
-- order, as a whole (a row_number over the key: see stg_orders).
SELECT
    response_id,
    member_id,
    answered_at AS answered_on,
    touchpoint,
    nps,
    csat,
    ces,
    category_spend_monthly,
    brands_used,
    our_rank
FROM (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY response_id
            ORDER BY answered_at, member_id, touchpoint, nps, csat, ces, category_spend_monthly, brands_used, our_rank
        ) AS copy_no
    FROM loyalty_survey_answers
) a
WHERE copy_no = 1
