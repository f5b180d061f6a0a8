-- The spam classifier's business value per window as a goal: the sum of its cost matrix over the
-- window's labelled decisions, the same number as the model's quality metric `business_value`
-- with `business_value: {tp: 1.0, fp: -5.0, fn: -2.0, tn: 0.0}` (a blocked spam message is worth 1,
-- a blocked ordinary one costs 5, a delivered spam message 2). Use it with `direction: at_least`
-- and `maturity:` at least the labels' max_delay. Rows without a score, a decision or a 0/1 label
-- count in no cell, as in the model's confusion matrix.
SELECT SUM(CASE WHEN l.is_spam = 1 AND m.is_blocked = 1 THEN 1.0
                WHEN l.is_spam = 0 AND m.is_blocked = 1 THEN -5.0
                WHEN l.is_spam = 1 AND m.is_blocked = 0 THEN -2.0
                WHEN l.is_spam = 0 AND m.is_blocked = 0 THEN 0.0 END) AS value
FROM messages m
JOIN spam_labels l ON l.message_id = m.message_id
WHERE m.predicted_at >= :window_start AND m.predicted_at < :window_end
  AND m.spam_score IS NOT NULL AND l.is_spam IN (0, 1)
