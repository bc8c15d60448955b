-- The demo's models side by side: eval mAP, mean AUC and d' on the clean eval split.
-- Each row is one evaluate stage's metrics_summary (pipelines/demo.toml), except the checkpoint ensemble,
-- which is the train stage's own running mean of the predictions of epochs 1..last (train_metrics).
WITH rows AS (
  SELECT 1 AS ord, 'teacher (noisy labels, 4 heads)' AS model, map, mauc, d_prime FROM teacher_metrics_summary
  UNION ALL
  SELECT 2, 'student, mean pooling', map, mauc, d_prime FROM student_mean_metrics_summary
  UNION ALL
  SELECT 3, 'student, 4-head attention', map, mauc, d_prime FROM student_attention_metrics_summary
  UNION ALL
  SELECT 4, 'student attention, checkpoint ensemble', ensemble_map, ensemble_mauc, CAST(NULL AS DOUBLE)
  FROM train_metrics_student_attention
  WHERE epoch = (SELECT max(epoch) FROM train_metrics_student_attention)
  UNION ALL
  SELECT 5, 'student attention, weight average', map, mauc, d_prime FROM student_attention_wa_metrics_summary
  UNION ALL
  SELECT 6, 'ensemble of the two students', map, mauc, d_prime FROM ensemble_metrics_summary
)
SELECT model, round(map, 3) AS "mAP", round(mauc, 3) AS "mAUC", round(d_prime, 3) AS "d'"
FROM rows
ORDER BY ord
