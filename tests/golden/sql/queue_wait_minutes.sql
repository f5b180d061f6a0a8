-- Average wait of the tickets opened in the window.
SELECT AVG(wait_minutes) AS value
FROM tickets
WHERE opened_at >= :window_start AND opened_at < :window_end
