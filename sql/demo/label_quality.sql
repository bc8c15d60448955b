-- Label enhancement against the demo's hidden truth (demo_truth), on the train split.
-- precision: of the labels a rule added, the share that are true labels;
-- recall: of the true labels the noise removed (by the kind of error that removed them), the share added back.
-- `all` is every rule together and every removed label.
WITH truth AS (
  SELECT clip_id, mid, observed, dropped FROM demo_truth WHERE split = 'train'
),
added AS (
  SELECT e.origin, t.clip_id IS NOT NULL AS correct
  FROM labels_enhanced e
  LEFT JOIN truth t ON t.clip_id = e.clip_id AND t.mid = e.mid
  WHERE e.origin <> 'original'
),
missing AS (
  SELECT t.dropped, e.clip_id IS NOT NULL AS recovered
  FROM truth t
  LEFT JOIN labels_enhanced e ON e.clip_id = t.clip_id AND e.mid = t.mid AND e.origin <> 'original'
  WHERE NOT t.observed
),
added_by AS (
  SELECT 'all' AS rule, correct FROM added
  UNION ALL SELECT 'type1', correct FROM added WHERE origin LIKE '%type1%'
  UNION ALL SELECT 'type2', correct FROM added WHERE origin LIKE '%type2%'
),
missing_by AS (
  SELECT 'all' AS rule, recovered FROM missing
  UNION ALL SELECT dropped, recovered FROM missing
),
a AS (
  SELECT rule, count(*) AS added, sum(CASE WHEN correct THEN 1 ELSE 0 END) AS correct FROM added_by GROUP BY rule
),
m AS (
  SELECT rule, count(*) AS missing, sum(CASE WHEN recovered THEN 1 ELSE 0 END) AS recovered FROM missing_by GROUP BY rule
)
SELECT
  coalesce(a.rule, m.rule) AS rule,
  coalesce(a.added, 0) AS added,
  coalesce(a.correct, 0) AS correct,
  round(CAST(a.correct AS DOUBLE) / a.added, 3) AS precision,
  coalesce(m.missing, 0) AS missing,
  coalesce(m.recovered, 0) AS recovered,
  round(CAST(m.recovered AS DOUBLE) / m.missing, 3) AS recall
FROM a FULL OUTER JOIN m ON a.rule = m.rule
ORDER BY CASE coalesce(a.rule, m.rule) WHEN 'all' THEN 2 ELSE 1 END, rule
