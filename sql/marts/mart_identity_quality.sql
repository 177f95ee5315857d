-- mart_identity_quality: the identity run in figures, one row per (metric, dimension).
-- Columns and definitions: mart_identity_quality.yml.
SELECT metric, dimension, value, $as_of AS as_of_date
FROM identity_quality
