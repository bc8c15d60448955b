-- needed_check_examples.sql -- examples for the label stage's error message when needed_checks.sql
-- found a problem: up to 5 needed (clip, class) pairs per problem, by clip_id and mid.
-- Inputs: needed_scores (the output of needed_scores.sql). Placeholders: none.
-- Output: problem Utf8 ('missing' | 'duplicate' | 'invalid'), clip_id Utf8, mid Utf8; at most 15 rows.
WITH problems AS (
    SELECT 'missing' AS problem, clip_id, mid
    FROM needed_scores
    WHERE NOT scored
    UNION ALL
    SELECT 'duplicate' AS problem, clip_id, mid
    FROM needed_scores
    WHERE scored
    GROUP BY clip_id, mid
    HAVING COUNT(*) > 1
    UNION ALL
    SELECT 'invalid' AS problem, clip_id, mid
    FROM needed_scores
    WHERE scored AND (score IS NULL OR isnan(CAST(score AS DOUBLE)) OR score < 0 OR score > 1)
)
SELECT problem, clip_id, mid
FROM (SELECT problem, clip_id, mid,
             ROW_NUMBER() OVER (PARTITION BY problem ORDER BY clip_id, mid) AS k
      FROM problems) AS ranked
WHERE k <= 5
ORDER BY problem, clip_id, mid
