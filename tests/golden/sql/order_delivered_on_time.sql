-- Orders delivered by their promised time, over orders delivered in the window.
SELECT 1.0 * SUM(on_time) / NULLIF(COUNT(*), 0) AS value,
       SUM(on_time) AS numerator,
       COUNT(*) AS denominator
FROM deliveries
WHERE delivered_at >= :window_start AND delivered_at < :window_end
