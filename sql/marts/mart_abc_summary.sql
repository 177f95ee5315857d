-- mart_abc_summary: the 80/20 check, one row per ABC class. Columns: mart_abc_summary.yml.
SELECT
    abc_class,
    count(*) AS customers,
    CAST(count(*) AS DOUBLE) / sum(count(*)) OVER () AS customer_share,
    round(sum(revenue), 2) AS revenue,
    CASE WHEN sum(sum(revenue)) OVER () > 0 THEN sum(revenue) / sum(sum(revenue)) OVER () ELSE 0.0 END AS revenue_share,
    max(as_of_date) AS as_of_date
FROM mart_abc
GROUP BY abc_class
