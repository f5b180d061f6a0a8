-- Minutes of use per active user per day, averaged over active user-days:
--   numerator   = total minutes of the sessions that started in the window
--   denominator = active user-days: distinct (user_id, session_date) pairs among those sessions
--                 (session_date is the UTC date of started_at)
--   value       = numerator / denominator; NULL when nobody was active
-- On a daily window this is total minutes / daily active users; on a weekly window it is the
-- same unit (minutes per user per day): the minutes of all its days over the sum of their daily
-- active users. No date arithmetic, so it runs unchanged on PostgreSQL and SQLite.
-- Windows are half-open [window_start, window_end) (bound as window_start and window_end).
WITH sessions_in_window AS (
    SELECT s.user_id, s.session_date, s.duration_minutes
    FROM user_sessions s
    WHERE s.started_at >= :window_start AND s.started_at < :window_end
),
user_days AS (
    SELECT user_id, session_date
    FROM sessions_in_window
    GROUP BY user_id, session_date
),
totals AS (
    SELECT (SELECT SUM(duration_minutes) FROM sessions_in_window) AS minutes,
           (SELECT COUNT(*) FROM user_days) AS user_days
)
SELECT CAST(minutes AS DOUBLE PRECISION) / NULLIF(user_days, 0) AS value,
       COALESCE(minutes, 0) AS numerator,
       user_days AS denominator
FROM totals
