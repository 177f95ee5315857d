-- mart_touchpoints: every interaction up to the as-of date (web page views cut into
-- sessions, purchases, failed payments, returns, loyalty-app events, survey answers),
-- classified by buying stage, channel and creator through the seeds touchpoint_types.csv
-- and utm_channel_map.csv, and attributed to the person (customer_key) the data links it to.
-- Web page views come sessionised from int_web_sessions.
-- Columns and definitions: mart_touchpoints.yml.
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
            row_number() OVER (PARTITION BY k.utm_source_key, k.utm_medium_key ORDER BY m.priority) AS rule_rank
        FROM (SELECT DISTINCT utm_source_key, utm_medium_key FROM int_web_sessions) k
        JOIN utm_channel_map m
          ON k.utm_source_key LIKE lower(m.utm_source)
         AND k.utm_medium_key LIKE lower(m.utm_medium)
    ) r
    WHERE rule_rank = 1
),
web_touchpoints AS (
    SELECT
        'web:' || e.event_id AS touchpoint_id,
        'web' AS source_system,
        'web:' || coalesce(nullif(lower(trim(e.page_type)), ''), '(none)') AS type_key,
        CASE WHEN e.session_event_no = 1 THEN coalesce(sc.visit_type, 'web_visit') END AS entry_touchpoint_type,
        -- The person the session logs in as, else the person of the cookie (its first login
        -- or the e-mail typed at checkout, as the identity step linked them).
        coalesce(ks.customer_key, kl.customer_key, kc.customer_key) AS customer_key,
        e.cookie_id,
        CAST(NULL AS VARCHAR) AS member_id,
        e.cookie_id || '#' || CAST(e.session_no AS VARCHAR) AS session_id,
        e.session_event_no = 1 AS is_session_entry,
        coalesce(sc.entry_channel, 'Unmapped') AS entry_channel,
        coalesce(sc.creator, 'unmapped') AS session_creator,
        e.page_type,
        CAST(NULL AS VARCHAR) AS order_id,
        e.event_time AS occurred_at,
        CAST(e.event_time AT TIME ZONE $report_time_zone AS DATE) AS occurred_on,
        CAST(NULL AS DOUBLE) AS amount
    FROM int_web_sessions e
    LEFT JOIN session_channels sc ON sc.utm_source_key = e.utm_source_key AND sc.utm_medium_key = e.utm_medium_key
    LEFT JOIN int_erp_keys ks ON ks.customer_id = e.session_customer_id
    LEFT JOIN int_erp_keys kl ON kl.customer_id = e.cookie_customer_id
    LEFT JOIN cookie_keys kc ON kc.cookie_id = e.cookie_id
),
orders AS (
    SELECT
        o.order_id,
        k.customer_key,
        o.order_date,
        o.status,
        o.payment_status,
        coalesce(nullif(lower(trim(o.channel)), ''), CASE WHEN o.store_id IS NOT NULL THEN 'store' ELSE '(none)' END) AS channel_key,
        row_number() OVER (PARTITION BY o.order_id ORDER BY o.order_date, o.customer_id) AS copy_no
    FROM stg_orders o
    LEFT JOIN int_erp_keys k ON k.customer_id = o.customer_id
    WHERE o.order_date <= $as_of
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
    FROM orders o
    WHERE o.copy_no = 1 AND lower(trim(o.payment_status)) = 'failed'
    UNION ALL
    -- Returns: one touchpoint per return_id (its lines summed).
    SELECT
        'return:' || r.return_id,
        'erp',
        'erp:return:' || min(o.channel_key),
        min(o.customer_key),
        min(r.order_id),
        min(coalesce(r.return_date, o.order_date)),
        sum(coalesce(r.refund_amount, 0.0))
    FROM stg_returns r
    JOIN orders o ON o.order_id = r.order_id AND o.copy_no = 1
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
    FROM (
        SELECT
            *,
            row_number() OVER (PARTITION BY event_id ORDER BY event_time, member_id, event_type) AS copy_no
        FROM stg_app_events
        WHERE CAST(event_time AT TIME ZONE $report_time_zone AS DATE) <= $as_of
    ) e
    LEFT JOIN int_member_keys mk ON mk.member_id = e.member_id
    WHERE e.copy_no = 1
),
survey_touchpoints AS (
    SELECT
        'survey:' || s.response_id AS touchpoint_id,
        'survey:' || coalesce(nullif(lower(trim(s.touchpoint)), ''), '(none)') AS type_key,
        mk.customer_key,
        s.member_id,
        s.answered_on AS occurred_on
    FROM (
        SELECT *, row_number() OVER (PARTITION BY response_id ORDER BY answered_on, member_id) AS copy_no
        FROM stg_survey_answers
        WHERE answered_on <= $as_of
    ) s
    LEFT JOIN int_member_keys mk ON mk.member_id = s.member_id
    WHERE s.copy_no = 1
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
            row_number() OVER (PARTITION BY k.type_key ORDER BY m.priority) AS rule_rank
        FROM (SELECT DISTINCT type_key FROM all_touchpoints) k
        JOIN touchpoint_types m ON k.type_key LIKE lower(m.event_pattern)
    ) r
    WHERE rule_rank = 1
),
classified AS (
    SELECT t.*, m.touchpoint_type, m.stage, m.channel, m.creator, m.is_pain_point
    FROM all_touchpoints t
    LEFT JOIN type_rules m ON m.type_key = t.type_key
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
