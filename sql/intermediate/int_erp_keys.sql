-- The person (customer_key) of every ERP customer number the identity step saw: master
-- records, and customer numbers that only orders name (see int_identity_erp).
SELECT source_record_id AS customer_id, customer_key
FROM identity
WHERE source = 'erp_customers'
