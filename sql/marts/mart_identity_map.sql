-- mart_identity_map: every source record with the person (customer_key) the identity step
-- assigned it, how it was matched and how its key moved since the previous run.
-- Columns and definitions: mart_identity_map.yml.
SELECT
    source,
    source_record_id,
    customer_key,
    match_method,
    match_probability,
    cluster_size,
    cluster_capped,
    previous_customer_key,
    key_status
FROM identity
