-- Loyalty-app events; event_time is UTC.
SELECT
    event_id,
    member_id,
    event_time,
    event_type
FROM loyalty_app_events
