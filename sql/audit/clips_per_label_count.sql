-- Clips per label count: how many clips have 0, 1, 2, ... labels.
-- psla sql --file sql/audit/clips_per_label_count.sql --root R
SELECT n_labels, count(*) AS clips
FROM (
    SELECT c.clip_id, count(l.mid) AS n_labels
    FROM clips c
    LEFT JOIN labels l ON l.clip_id = c.clip_id
    GROUP BY c.clip_id
) per_clip
GROUP BY n_labels
ORDER BY n_labels;
