-- Large-loan default rate: of the loans above 1,000,000 RUB issued in the window (a cohort),
-- the share that have defaulted by now (the defaults known when the query runs).
--   numerator   = large loans issued in the window with a row in loan_defaults
--   denominator = large loans issued in the window
--   value       = numerator / denominator; NULL when no large loan was issued
-- Windows are half-open [window_start, window_end) (bound as window_start and window_end). Runs unchanged on PostgreSQL and SQLite.
SELECT CAST(SUM(CASE WHEN d.loan_id IS NULL THEN 0 ELSE 1 END) AS DOUBLE PRECISION)
           / NULLIF(COUNT(*), 0) AS value,
       COALESCE(SUM(CASE WHEN d.loan_id IS NULL THEN 0 ELSE 1 END), 0) AS numerator,
       COUNT(*) AS denominator
FROM loans l
LEFT JOIN loan_defaults d ON d.loan_id = l.loan_id
WHERE l.issued_at >= :window_start AND l.issued_at < :window_end
  AND l.amount_rub > 1000000
