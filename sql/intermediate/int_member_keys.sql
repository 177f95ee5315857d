-- The person (customer_key) of every loyalty member id: the identity step's member records,
-- and, for a member id that only ERP records carry (the member export lacks it), the person
-- of those ERP records. App events and survey answers reach their person through this table.
SELECT source_record_id AS member_id, customer_key
FROM identity
WHERE source = 'loyalty_members'
UNION ALL
SELECT c.loyalty_id AS member_id, min(k.customer_key) AS customer_key
FROM stg_customers c
JOIN int_erp_keys k ON k.customer_id = c.customer_id
WHERE c.loyalty_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM identity m WHERE m.source = 'loyalty_members' AND m.source_record_id = c.loyalty_id)
GROUP BY c.loyalty_id
