-- Refunds paid in the window, in roubles.
SELECT SUM(amount_rub) AS value
FROM refunds
WHERE paid_at >= :window_start AND paid_at < :window_end
