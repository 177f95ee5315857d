-- int_survey_answers: the loyalty-app survey answers up to the as-of date, one row per
-- response_id (stg_survey_answers keeps one copy of a re-exported answer), with the person
-- of the answering member (int_member_keys) and the scores checked against their scales:
-- a score outside its scale is no answer for that score. Every mart that reads survey
-- answers reads them here. Columns and definitions: int_survey_answers.yml.
SELECT
    a.response_id,
    a.member_id,
    k.customer_key,
    a.answered_on,
    a.touchpoint,
    CASE WHEN a.nps BETWEEN 0 AND 10 THEN a.nps END AS nps,
    CASE WHEN a.csat BETWEEN 1 AND 5 THEN a.csat END AS csat,
    CASE WHEN a.ces BETWEEN 1 AND 7 THEN a.ces END AS ces,
    a.category_spend_monthly,
    a.brands_used,
    a.our_rank
FROM stg_survey_answers a
LEFT JOIN int_member_keys k ON k.member_id = a.member_id
WHERE a.answered_on <= $as_of
