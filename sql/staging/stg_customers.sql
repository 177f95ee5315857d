-- ERP customer master, one row per customer_id (columns renamed and typed).
-- A re-exported customer record is one record. The export carries no change date, so, as
-- the identity step does with records that share an id, the copy with the latest created_on
-- is kept (undated last), then the first by the other columns in their export order, as a
-- whole: its name, contact and address fields are never mixed across copies (a row_number
-- over the key: see stg_orders).
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
FROM (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY customer_id
            ORDER BY created_at DESC NULLS LAST, first_name, last_name, email, phone, street, postcode, city,
                birth_date, loyalty_id, customer_type, contract_id
        ) AS copy_no
    FROM erp_customers
) c
WHERE copy_no = 1
