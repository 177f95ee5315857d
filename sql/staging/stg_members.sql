-- Loyalty-app members, one row per member_id.
-- A re-exported member record is one record: the copy with the latest joined_on is kept
-- (undated last), as the identity step does with records that share an id; of copies that
-- joined on the same day, one without consent before one with it (a missing flag first,
-- then false, then true), so that copies which disagree never grant a consent; then the
-- first by the other columns in their export order. The copy is kept as a whole (a
-- row_number over the key: see stg_orders).
SELECT
    member_id,
    email,
    phone,
    first_name,
    last_name,
    postcode,
    birth_date,
    joined_at AS joined_on,
    consent_email,
    consent_sms
FROM (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY member_id
            ORDER BY joined_at DESC NULLS LAST, consent_email NULLS FIRST, consent_sms NULLS FIRST,
                email, phone, first_name, last_name, postcode, birth_date
        ) AS copy_no
    FROM loyalty_members
) m
WHERE copy_no = 1
