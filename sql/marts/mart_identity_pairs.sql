-- mart_identity_pairs: the compared pairs that reached the match threshold, with the level
-- and weight of every comparison (a match-weight waterfall per pair), for explaining why two
-- records were or were not joined. Columns and definitions: mart_identity_pairs.yml.
SELECT
    source_a,
    record_id_a,
    source_b,
    record_id_b,
    blocking_rule,
    level_first_name,
    weight_first_name,
    level_last_name,
    weight_last_name,
    level_birth_date,
    weight_birth_date,
    level_email,
    weight_email,
    level_phone,
    weight_phone,
    level_postcode,
    weight_postcode,
    level_street,
    weight_street,
    match_weight,
    match_probability,
    decision
FROM identity_pairs
