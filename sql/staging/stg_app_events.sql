-- Loyalty-app events, one row per event_id; event_time is UTC.
-- A re-exported event is one event: exact copies collapse, and of copies that differ the
-- earliest is kept, then the first by member and event type, as a whole (a row_number over
-- the key: see stg_orders). Materialised: three marts read the events.
SELECT
    event_id,
    member_id,
    event_time,
    event_type
FROM (
    SELECT
        *,
        row_number() OVER (PARTITION BY event_id ORDER BY event_time, member_id, event_type) AS copy_no
    FROM loyalty_app_events
) e
WHERE copy_no = 1
