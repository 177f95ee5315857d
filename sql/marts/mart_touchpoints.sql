-- mart_touchpoints: every interaction up to the as-of date (web page views cut into
-- sessions, purchases, failed payments, returns, loyalty-app events, survey answers),
-- classified by buying stage, channel and creator through the seeds touchpoint_types.csv
-- and utm_channel_map.csv, and attributed to the person (customer_key) the data links it to.
-- Web page views come sessionised from int_web_sessions, failed payments and returns from
-- int_pain_orders. Columns and definitions: mart_touchpoints.yml.
--
-- Memory: DataFusion builds a hash join's table from its left input whenever statistics do
-- not tell it which side is smaller, which is the case for derived tables. Every join of
-- a large input here is therefore written `small RIGHT JOIN large`: the small side (keys,
-- rules) is held in memory and the events stream through.
WITH cookie_keys AS (
    -- Cookies with a login or a checkout e-mail are identity records of their own.
    SELECT source_record_id AS cookie_id, customer_key FROM identity WHERE source = 'web_cookies'
),
session_channels AS (
    -- A session's traffic source is the UTM tag of its first event. Rules are matched once
    -- per distinct tag pair; the events then join this small table on equality.
    SELECT utm_source_key, utm_medium_key, entry_channel, creator, visit_type
    FROM (
        SELECT
            k.utm_source_key,
            k.utm_medium_key,
            m.entry_channel,
            m.creator,
            m.visit_type,
            -- Rules of equal priority (a replaced seed) fall back to the columns taken, so
            -- the result does not depend on the order the rules arrive in.
            row_number() OVER (
                PARTITION BY k.utm_source_key, k.utm_medium_key
                ORDER BY m.priority, m.entry_channel, m.creator, m.visit_type
            ) AS rule_rank
        FROM (SELECT DISTINCT utm_source_key, utm_medium_key FROM int_web_sessions) k
        JOIN utm_channel_map m
          ON k.utm_source_key LIKE lower(m.utm_source)
         AND k.utm_medium_key LIKE lower(m.utm_medium)
    ) r
    WHERE rule_rank = 1
),
web_events AS (
    SELECT e.*, 'web:' || coalesce(nullif(lower(trim(e.page_type)), ''), '(none)') AS type_key
    FROM int_web_sessions e
),
web_channels AS (
    SELECT e.*, sc.entry_channel, sc.creator AS session_creator, sc.visit_type
    FROM session_channels sc
    RIGHT JOIN web_events e ON sc.utm_source_key = e.utm_source_key AND sc.utm_medium_key = e.utm_medium_key
),
web_session_keys AS (
    -- The person the session logs in as.
    SELECT e.*, ks.customer_key AS session_key
    FROM int_erp_keys ks
    RIGHT JOIN web_channels e ON ks.customer_id = e.session_customer_id
),
web_login_keys AS (
    -- The person of the cookie's first login.
    SELECT e.*, kl.customer_key AS login_key
    FROM int_erp_keys kl
    RIGHT JOIN web_session_keys e ON kl.customer_id = e.cookie_customer_id
),
web_keys AS (
    -- The cookie's own identity record (linked by the e-mail typed at checkout).
    SELECT e.*, kc.customer_key AS cookie_key
    FROM cookie_keys kc
    RIGHT JOIN web_login_keys e ON kc.cookie_id = e.cookie_id
),
web_touchpoints AS (
    SELECT
        'web:' || e.event_id AS touchpoint_id,
        'web' AS source_system,
        e.type_key,
        CASE WHEN e.session_event_no = 1 THEN coalesce(e.visit_type, 'web_visit') END AS entry_touchpoint_type,
        -- The person the session logs in as, else the person of the cookie (its first login
        -- or the e-mail typed at checkout, as the identity step linked them).
        coalesce(e.session_key, e.login_key, e.cookie_key) AS customer_key,
        e.cookie_id,
        CAST(NULL AS VARCHAR) AS member_id,
        e.cookie_id || '#' || CAST(e.session_no AS VARCHAR) AS session_id,
        e.session_event_no = 1 AS is_session_entry,
        coalesce(e.entry_channel, 'Unmapped') AS entry_channel,
        coalesce(e.session_creator, 'unmapped') AS session_creator,
        e.page_type,
        CAST(NULL AS VARCHAR) AS order_id,
        e.event_time AS occurred_at,
        CAST(e.event_time AT TIME ZONE $report_time_zone AS DATE) AS occurred_on,
        CAST(NULL AS DOUBLE) AS amount
    FROM web_keys e
),
erp_touchpoints AS (
    -- Purchases: completed orders with at least one line, as in mart_rfm (int_order_values
    -- has them with their net revenue and person).
    SELECT
        'purchase:' || v.order_id AS touchpoint_id,
        'erp' AS source_system,
        'erp:purchase:' || coalesce(nullif(lower(trim(v.channel)), ''), CASE WHEN v.store_id IS NOT NULL THEN 'store' ELSE '(none)' END) AS type_key,
        v.customer_key,
        v.order_id,
        v.order_date AS occurred_on,
        v.net_amount AS amount
    FROM int_order_values v
    UNION ALL
    SELECT
        'failed_payment:' || o.order_id,
        'erp',
        'erp:failed_payment:' || o.channel_key,
        o.customer_key,
        o.order_id,
        o.order_date,
        CAST(NULL AS DOUBLE)
    FROM int_pain_orders o
    WHERE o.payment_failed
    UNION ALL
    -- Returns: one touchpoint per return_id (its lines summed). The channel and person
    -- come from the same order as order_id (the smallest, should a return name several),
    -- not each from a separate min().
    SELECT
        'return:' || r.return_id,
        'erp',
        'erp:return:' || first_value(o.channel_key ORDER BY o.order_id),
        first_value(o.customer_key ORDER BY o.order_id),
        min(r.order_id),
        min(coalesce(r.return_date, o.order_date)),
        sum(coalesce(r.refund_amount, 0.0))
    FROM stg_returns r
    JOIN int_pain_orders o ON o.order_id = r.order_id AND o.has_return
    WHERE coalesce(r.return_date, o.order_date) <= $as_of
    GROUP BY r.return_id
),
app_touchpoints AS (
    SELECT
        'app:' || e.event_id AS touchpoint_id,
        'app:' || coalesce(nullif(lower(trim(e.event_type)), ''), '(none)') AS type_key,
        mk.customer_key,
        e.member_id,
        e.event_time AS occurred_at,
        CAST(e.event_time AT TIME ZONE $report_time_zone AS DATE) AS occurred_on
    FROM stg_app_events e
    LEFT JOIN int_member_keys mk ON mk.member_id = e.member_id
    WHERE CAST(e.event_time AT TIME ZONE $report_time_zone AS DATE) <= $as_of
),
survey_touchpoints AS (
    -- Survey answers up to the as-of date with the person of their member (int_survey_answers).
    SELECT
        'survey:' || s.response_id AS touchpoint_id,
        'survey:' || coalesce(nullif(lower(trim(s.touchpoint)), ''), '(none)') AS type_key,
        s.customer_key,
        s.member_id,
        s.answered_on AS occurred_on
    FROM int_survey_answers s
),
all_touchpoints AS (
    SELECT
        touchpoint_id, source_system, type_key, entry_touchpoint_type, customer_key, cookie_id, member_id,
        session_id, is_session_entry, entry_channel, session_creator, page_type, order_id, occurred_at, occurred_on, amount
    FROM web_touchpoints
    UNION ALL
    SELECT
        touchpoint_id, source_system, type_key, CAST(NULL AS VARCHAR), customer_key, CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR),
        CAST(NULL AS VARCHAR), CAST(NULL AS BOOLEAN), CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR),
        order_id, arrow_cast(NULL, 'Timestamp(Microsecond, Some("UTC"))'), occurred_on, amount
    FROM erp_touchpoints
    UNION ALL
    SELECT
        touchpoint_id, 'app', type_key, CAST(NULL AS VARCHAR), customer_key, CAST(NULL AS VARCHAR), member_id,
        CAST(NULL AS VARCHAR), CAST(NULL AS BOOLEAN), CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR),
        CAST(NULL AS VARCHAR), occurred_at, occurred_on, CAST(NULL AS DOUBLE)
    FROM app_touchpoints
    UNION ALL
    SELECT
        touchpoint_id, 'survey', type_key, CAST(NULL AS VARCHAR), customer_key, CAST(NULL AS VARCHAR), member_id,
        CAST(NULL AS VARCHAR), CAST(NULL AS BOOLEAN), CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR),
        CAST(NULL AS VARCHAR), arrow_cast(NULL, 'Timestamp(Microsecond, Some("UTC"))'), occurred_on, CAST(NULL AS DOUBLE)
    FROM survey_touchpoints
),
type_rules AS (
    SELECT type_key, touchpoint_type, stage, channel, creator, is_pain_point
    FROM (
        SELECT
            k.type_key,
            m.touchpoint_type,
            m.stage,
            m.channel,
            m.creator,
            m.is_pain_point,
            -- Equal priorities fall back to the columns taken (see session_channels).
            row_number() OVER (
                PARTITION BY k.type_key
                ORDER BY m.priority, m.touchpoint_type, m.stage, m.channel, m.creator, m.is_pain_point
            ) AS rule_rank
        -- The type keys, each from the columns it is made of: web events' before they
        -- are joined to the people, so this reads one column of int_web_sessions.
        FROM (
            SELECT type_key FROM web_events
            UNION
            SELECT type_key FROM erp_touchpoints
            UNION
            SELECT type_key FROM app_touchpoints
            UNION
            SELECT type_key FROM survey_touchpoints
        ) k
        JOIN touchpoint_types m ON k.type_key LIKE lower(m.event_pattern)
    ) r
    WHERE rule_rank = 1
),
classified AS (
    SELECT t.*, m.touchpoint_type, m.stage, m.channel, m.creator, m.is_pain_point
    FROM type_rules m
    RIGHT JOIN all_touchpoints t ON m.type_key = t.type_key
)
SELECT
    touchpoint_id,
    source_system,
    coalesce(entry_touchpoint_type, touchpoint_type, 'unmapped') AS touchpoint_type,
    coalesce(stage, 'unmapped') AS stage,
    coalesce(channel, 'unmapped') AS channel,
    CASE WHEN creator = 'session' THEN session_creator ELSE coalesce(creator, 'unmapped') END AS creator,
    coalesce(is_pain_point, false) AS is_pain_point,
    customer_key,
    cookie_id,
    member_id,
    session_id,
    is_session_entry,
    entry_channel,
    page_type,
    order_id,
    occurred_at,
    occurred_on,
    round(amount, 2) AS amount,
    $as_of AS as_of_date
FROM classified
