-- ERP customer records as identity records: normalised keys for matching (see the
-- normalize_* SQL functions), the ERP's own id as a key the web login carries, and the
-- loyalty id printed on receipts.
SELECT
    customer_id,
    customer_id AS erp_customer_id,
    loyalty_id,
    normalize_email(email) AS email,
    normalize_phone(phone, $default_phone_country) AS phone,
    normalize_name(first_name) AS first_name,
    normalize_name(last_name) AS last_name,
    normalize_name(street) AS street,
    normalize_postcode(postcode) AS postcode,
    CAST(birth_date AS VARCHAR) AS birth_date,
    created_on AS updated_at
FROM stg_customers
