-- mart_customer: the golden record of every person, personal data as keyed hashes only.
-- Columns and definitions: mart_customer.yml.
SELECT
    customer_key,
    records,
    sources,
    key_status,
    erp_customer_id,
    erp_customer_id_source AS erp_customer_id_record_source,
    loyalty_id,
    keyed_hash(email) AS email_hash,
    email_source,
    email_record_id,
    keyed_hash(phone) AS phone_hash,
    phone_source,
    phone_record_id,
    keyed_hash(first_name) AS first_name_hash,
    keyed_hash(last_name) AS last_name_hash,
    last_name_source AS name_source,
    last_name_record_id AS name_record_id,
    keyed_hash(street) AS street_hash,
    postcode,
    postcode_source,
    CAST(substr(birth_date, 1, 4) AS INT) AS birth_year,
    $as_of AS as_of_date
FROM identity_golden
