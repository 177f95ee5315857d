-- Loyalty-app members as identity records; the member id is the loyalty id ERP records carry.
SELECT
    member_id,
    member_id AS loyalty_id,
    normalize_email(email) AS email,
    normalize_phone(phone, $default_phone_country) AS phone,
    normalize_name(first_name) AS first_name,
    normalize_name(last_name) AS last_name,
    normalize_postcode(postcode) AS postcode,
    CAST(birth_date AS VARCHAR) AS birth_date,
    joined_on AS updated_at
FROM stg_members
