-- Failed checkouts over all checkouts, one row per payment method.
SELECT payment_method AS segment,
       1.0 * SUM(failed) / NULLIF(COUNT(*), 0) AS value,
       SUM(failed) AS numerator,
       COUNT(*) AS denominator
FROM checkouts
WHERE created_at >= :window_start AND created_at < :window_end
GROUP BY payment_method
