-- ERP customer master, one row per ERP customer record (columns renamed and typed only).
SELECT
    customer_id,
    first_name,
    last_name,
    email,
    phone,
    street,
    postcode,
    city,
    birth_date,
    created_at AS created_on,
    loyalty_id,
    customer_type,
    contract_id
FROM erp_customers
