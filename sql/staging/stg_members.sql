-- Loyalty-app members.
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
FROM loyalty_members
