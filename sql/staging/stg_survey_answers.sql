-- Loyalty-app survey answers: NPS 0-10, CSAT 1-5, CES 1-7, self-reported monthly
-- category spend, brands used and the rank the member gives us among them.
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
FROM loyalty_survey_answers
