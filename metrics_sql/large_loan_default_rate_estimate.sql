-- Large-loan default rate, estimated before the defaults can be known: of the loans above
-- 1,000,000 RUB issued in the window, the expected share that default, from the credit model's
-- PD score of each loan's application.
--   numerator   = sum of the large loans' PD scores (the expected defaults)
--   denominator = large loans issued in the window
--   variance    = sum of p (1 - p): the variance of the defaults' count if loans default independently
-- It assumes the PD score is the probability that the loan defaults; the estimate is only as good
-- as that (monitor_goal_estimation_error says how far it was once cohorts mature).
-- Windows are half-open [window_start, window_end). Runs unchanged on PostgreSQL and SQLite.
SELECT SUM(a.pd_score) / NULLIF(COUNT(*), 0) AS value,
       COALESCE(SUM(a.pd_score), 0) AS numerator,
       COUNT(*) AS denominator,
       COALESCE(SUM(a.pd_score * (1 - a.pd_score)), 0) AS variance
FROM loans l
JOIN loan_applications a ON a.application_id = l.application_id
WHERE l.issued_at >= :window_start AND l.issued_at < :window_end
  AND l.amount_rub > 1000000
