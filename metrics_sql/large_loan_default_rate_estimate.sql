-- Large-loan default rate, estimated before the defaults can be known: of the loans above
-- 1,000,000 RUB issued in the window, the expected share that default, from the credit model's
-- PD score of each loan's application.
--   numerator   = the expected defaults: the sum of the large loans' lifetime default probabilities
--   denominator = large loans issued in the window
--   variance    = sum of p (1 - p): the variance of the defaults' count if loans default independently
-- The PD score is the probability of 30+ days past due within 90 days; a large loan (secured,
-- collateral checked) ends in default with 0.02 times that probability over its life: the credit
-- team's conversion factor, from the matured cohorts of earlier years. The estimate is only as good
-- as the scores and that factor (monitor_goal_estimation_error says how far it was once cohorts mature).
-- Windows are half-open [window_start, window_end). Runs unchanged on PostgreSQL and SQLite.
SELECT SUM(0.02 * a.pd_score) / NULLIF(COUNT(*), 0) AS value,
       COALESCE(SUM(0.02 * a.pd_score), 0) AS numerator,
       COUNT(*) AS denominator,
       COALESCE(SUM(0.02 * a.pd_score * (1 - 0.02 * a.pd_score)), 0) AS variance
FROM loans l
JOIN loan_applications a ON a.application_id = l.application_id
WHERE l.issued_at >= :window_start AND l.issued_at < :window_end
  AND l.amount_rub > 1000000
