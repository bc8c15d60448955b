-- check_examples.sql -- examples for the label stage's error message, run only when checks.sql found
-- a problem: for the first 3 labeled clips (by clip_id) whose scores are wrong, the classes with no
-- score, with more than one score, or with an invalid score.
-- Inputs: labels, teacher_scores, classes. Placeholders: none.
-- Output: problem Utf8 ('missing' | 'duplicate' | 'invalid'), clip_id Utf8, mid Utf8; at most 15 rows.
WITH labeled AS (
    SELECT DISTINCT clip_id FROM labels
),
vocab AS (
    SELECT mid, CAST("index" AS BIGINT) AS i FROM classes
),
expected AS (
    SELECT COUNT(*) AS n, SUM(i) AS s1, SUM(i * i) AS s2 FROM vocab
),
per_clip AS (
    SELECT l.clip_id,
           COUNT(v.mid) AS n,
           COALESCE(SUM(v.i), 0) AS s1,
           COALESCE(SUM(v.i * v.i), 0) AS s2,
           SUM(CASE WHEN v.mid IS NOT NULL AND (s.score IS NULL OR isnan(CAST(s.score AS DOUBLE))
                         OR s.score < 0 OR s.score > 1) THEN 1 ELSE 0 END) AS invalid
    FROM labeled AS l
    LEFT JOIN teacher_scores AS s ON s.clip_id = l.clip_id
    LEFT JOIN vocab AS v ON v.mid = s.mid
    GROUP BY l.clip_id
),
bad AS (
    SELECT p.clip_id
    FROM per_clip AS p CROSS JOIN expected AS e
    WHERE p.n <> e.n OR p.s1 <> e.s1 OR p.s2 <> e.s2 OR p.invalid > 0
    ORDER BY p.clip_id
    LIMIT 3
),
bad_scores AS (
    SELECT s.clip_id, s.mid, s.score
    FROM teacher_scores AS s
    JOIN bad AS b ON b.clip_id = s.clip_id
    JOIN vocab AS v ON v.mid = s.mid
),
problems AS (
    SELECT 'missing' AS problem, b.clip_id, v.mid
    FROM bad AS b CROSS JOIN vocab AS v
    WHERE NOT EXISTS (SELECT 1 FROM bad_scores AS s WHERE s.clip_id = b.clip_id AND s.mid = v.mid)
    UNION ALL
    SELECT 'duplicate' AS problem, clip_id, mid
    FROM bad_scores GROUP BY clip_id, mid HAVING COUNT(*) > 1
    UNION ALL
    SELECT 'invalid' AS problem, clip_id, mid
    FROM bad_scores
    WHERE score IS NULL OR isnan(CAST(score AS DOUBLE)) OR score < 0 OR score > 1
)
SELECT problem, clip_id, mid
FROM (SELECT problem, clip_id, mid,
             ROW_NUMBER() OVER (PARTITION BY problem ORDER BY clip_id, mid) AS k
      FROM problems) AS ranked
WHERE k <= 5
ORDER BY problem, clip_id, mid
