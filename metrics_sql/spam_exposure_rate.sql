-- Spam exposure: the share of active users who saw spam in the window.
--   numerator   = distinct users who viewed, in the window, at least one message labelled spam
--                 (labels as they stand when the query runs: they arrive within two days)
--   denominator = distinct active users: a session started or a message viewed in the window
--   value       = numerator / denominator; NULL when nobody was active
-- Windows are half-open [window_start, window_end) (bound as window_start and window_end). Runs unchanged on PostgreSQL and SQLite.
WITH active_users AS (
    SELECT s.user_id
    FROM user_sessions s
    WHERE s.started_at >= :window_start AND s.started_at < :window_end
    UNION
    SELECT v.user_id
    FROM message_views v
    WHERE v.viewed_at >= :window_start AND v.viewed_at < :window_end
),
exposed_users AS (
    SELECT DISTINCT v.user_id
    FROM message_views v
    JOIN spam_labels l ON l.message_id = v.message_id
    WHERE v.viewed_at >= :window_start AND v.viewed_at < :window_end
      AND l.is_spam = 1
),
counts AS (
    SELECT (SELECT COUNT(*) FROM exposed_users) AS numerator,
           (SELECT COUNT(*) FROM active_users) AS denominator
)
SELECT CAST(numerator AS DOUBLE PRECISION) / NULLIF(denominator, 0) AS value,
       numerator,
       denominator
FROM counts
