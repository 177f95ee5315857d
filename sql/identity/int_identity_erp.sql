-- ERP customer records as identity records: normalised keys for matching (see the
-- normalize_* SQL functions), the ERP's own id as a key the web login carries, and the
-- loyalty id printed on receipts. Customer numbers that orders name but whose master record
-- is missing (never exported, or quarantined) come as records without attributes, so that
-- every order belongs to a person.
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
UNION ALL
SELECT
    o.customer_id,
    o.customer_id AS erp_customer_id,
    CAST(NULL AS VARCHAR) AS loyalty_id,
    CAST(NULL AS VARCHAR) AS email,
    CAST(NULL AS VARCHAR) AS phone,
    CAST(NULL AS VARCHAR) AS first_name,
    CAST(NULL AS VARCHAR) AS last_name,
    CAST(NULL AS VARCHAR) AS street,
    CAST(NULL AS VARCHAR) AS postcode,
    CAST(NULL AS VARCHAR) AS birth_date,
    min(o.order_date) AS updated_at
FROM stg_orders o
WHERE NOT EXISTS (SELECT 1 FROM stg_customers c WHERE c.customer_id = o.customer_id)
GROUP BY o.customer_id
