-- mart_journeys: per person, the touchpoints of mart_touchpoints by stage, channel and
-- creator, web sessions and their conversion, and the path of sessions before the first
-- purchase. Sessions come aggregated once from int_customer_sessions. Columns and
-- definitions: mart_journeys.yml.
--
-- Memory: a hash join holds its left input in memory when statistics do not say which side
-- is smaller, so every join below puts the per-person table (first purchases) on the left
-- and lets the sessions stream through.
WITH customer_touchpoints AS (
    SELECT * FROM mart_touchpoints WHERE customer_key IS NOT NULL
),
sessions AS (
    SELECT customer_key, session_id, session_start, session_start_on, entry_channel, converted
    FROM int_customer_sessions
),
first_purchases AS MATERIALIZED (
    -- Read three times below: computed once (AS MATERIALIZED), not at every reference.
    SELECT customer_key, min(occurred_on) AS first_purchase_on
    FROM customer_touchpoints
    WHERE touchpoint_id LIKE 'purchase:%'
    GROUP BY customer_key
),
first_day_conversions AS (
    -- On the day of the first purchase, the path ends with the first converting session.
    SELECT s.customer_key, min(s.session_start) AS converting_start
    FROM first_purchases f
    JOIN sessions s ON s.customer_key = f.customer_key AND s.session_start_on = f.first_purchase_on
    WHERE s.converted = 1
    GROUP BY s.customer_key
),
path_ends AS (
    -- Per buyer: the day of the first purchase and, that day, the converting session's start.
    SELECT f.customer_key, f.first_purchase_on, c.converting_start
    FROM first_day_conversions c
    RIGHT JOIN first_purchases f ON c.customer_key = f.customer_key
),
path_sessions AS (
    SELECT
        s.customer_key,
        s.session_start,
        s.session_id,
        s.entry_channel,
        row_number() OVER (PARTITION BY s.customer_key ORDER BY s.session_start DESC, s.session_id DESC) AS steps_back
    FROM path_ends e
    JOIN sessions s ON s.customer_key = e.customer_key
    WHERE s.session_start_on < e.first_purchase_on
       OR (s.session_start_on = e.first_purchase_on AND (e.converting_start IS NULL OR s.session_start <= e.converting_start))
),
paths AS (
    SELECT
        customer_key,
        count(*) AS sessions_before_first_purchase,
        CASE WHEN count(*) > $journey_path_max_sessions THEN '... > ' ELSE '' END
            || string_agg(
                CASE WHEN steps_back <= $journey_path_max_sessions THEN entry_channel END,
                ' > ' ORDER BY session_start, session_id
            ) AS path_to_first_purchase
    FROM path_sessions
    GROUP BY customer_key
),
session_counts AS (
    SELECT customer_key, count(*) AS sessions, sum(converted) AS converting_sessions
    FROM sessions
    GROUP BY customer_key
),
touchpoint_counts AS (
    SELECT
        customer_key,
        min(occurred_on) AS first_touchpoint_on,
        max(occurred_on) AS last_touchpoint_on,
        count(*) AS touchpoints,
        count(CASE WHEN stage = 'pre-purchase' THEN 1 END) AS pre_purchase_touchpoints,
        count(CASE WHEN stage = 'purchase' THEN 1 END) AS purchase_touchpoints,
        count(CASE WHEN stage = 'post-purchase' THEN 1 END) AS post_purchase_touchpoints,
        count(CASE WHEN channel = 'online' THEN 1 END) AS online_touchpoints,
        count(CASE WHEN channel = 'offline' THEN 1 END) AS offline_touchpoints,
        count(CASE WHEN creator = 'paid' THEN 1 END) AS paid_touchpoints,
        count(CASE WHEN creator = 'owned' THEN 1 END) AS owned_touchpoints,
        count(CASE WHEN creator = 'earned' THEN 1 END) AS earned_touchpoints,
        count(CASE WHEN is_pain_point THEN 1 END) AS pain_points
    FROM customer_touchpoints
    GROUP BY customer_key
)
SELECT
    t.customer_key,
    t.first_touchpoint_on,
    t.last_touchpoint_on,
    t.touchpoints,
    t.pre_purchase_touchpoints,
    t.purchase_touchpoints,
    t.post_purchase_touchpoints,
    t.online_touchpoints,
    t.offline_touchpoints,
    t.paid_touchpoints,
    t.owned_touchpoints,
    t.earned_touchpoints,
    t.pain_points,
    coalesce(s.sessions, 0) AS sessions,
    coalesce(s.converting_sessions, 0) AS converting_sessions,
    CASE WHEN s.sessions > 0 THEN round(CAST(s.converting_sessions AS DOUBLE) / s.sessions, 4) END AS conversion_rate,
    f.first_purchase_on,
    CAST(f.first_purchase_on AS INT) - CAST(t.first_touchpoint_on AS INT) AS days_to_first_purchase,
    CASE WHEN f.first_purchase_on IS NOT NULL THEN coalesce(p.sessions_before_first_purchase, 0) END AS sessions_before_first_purchase,
    p.path_to_first_purchase,
    $as_of AS as_of_date
FROM touchpoint_counts t
LEFT JOIN session_counts s ON s.customer_key = t.customer_key
LEFT JOIN first_purchases f ON f.customer_key = t.customer_key
LEFT JOIN paths p ON p.customer_key = t.customer_key
