-- Report: per-class AP of one evaluated model against the number of training clips labeled with the
-- class, as the sampler counted them (class_exposure).
-- psla sql --file sql/report/ap_vs_training_clips.sql --root R   (with ${metrics} replaced by a metrics table)
SELECT m.mid, m.display_name, m.ap, x.train_clips
FROM ${metrics} m
JOIN (SELECT mid, max(clips_with_label) AS train_clips FROM class_exposure GROUP BY mid) x ON x.mid = m.mid
WHERE m.ap IS NOT NULL
ORDER BY x.train_clips, m.mid;
