-- needed_checks.sql -- the input checks of the label stage's default `check = "needed"`, as one
-- row of counts, from the result of its one pass over the teacher's scores (score_pass.sql,
-- joined back to the pairs by needed_scores.sql).
--
-- The rules read the teacher's score of every needed pair (needed_pairs.sql) and nothing else.
-- The stage refuses to go on when one of those pairs has no score, more than one, or an invalid
-- one: it would otherwise guess. Scores the rules never read cannot change the result and are
-- not looked at; checks.sql (`check = "full"`) checks every labeled clip x every class instead,
-- at the cost of one more pass over the whole table.
-- Inputs: labels (clip_id, mid), classes (index, mid, display_name), pair_scores (score_pass.sql's
--   result), needed_scores. The number of needed pairs is read from pair_scores: the pairs are
--   numbered 1..n and the pass's LEFT join returns each at least once, so it is MAX(pair); the
--   label stage has dropped the needed pairs themselves by now (their memory is needed next).
-- Placeholders: none.
-- Output (one row, all Int64):
--   labeled_clips              distinct clips with at least one original label
--   original_labels            distinct original (clip, class) labels
--   vocabulary                 classes in the vocabulary
--   needed_pairs               (clip, class) pairs the rules read
--   missing_scores             needed pairs the teacher has no row for
--   duplicate_scores           extra rows: teacher rows of needed pairs beyond one per pair
--   invalid_scores             needed pairs' scores that are null, NaN or outside [0, 1]
--   labels_outside_vocabulary  original labels whose mid is not a vocabulary class
--   classes_without_labels     vocabulary classes no clip is labeled with (they get no threshold)
WITH kept AS (
    SELECT COUNT(*) AS n,
           CAST(COALESCE(SUM(CASE WHEN NOT scored THEN 1 ELSE 0 END), 0) AS BIGINT) AS missing,
           CAST(COALESCE(SUM(CASE WHEN scored AND (score IS NULL OR isnan(CAST(score AS DOUBLE))
                                                   OR score < 0 OR score > 1) THEN 1 ELSE 0 END), 0) AS BIGINT)
               AS invalid
    FROM needed_scores
),
pairs AS (
    SELECT CAST(COALESCE(MAX(pair), 0) AS BIGINT) AS n FROM pair_scores
)
SELECT
    (SELECT COUNT(*) FROM (SELECT DISTINCT clip_id FROM labels) AS c) AS labeled_clips,
    (SELECT COUNT(*) FROM (SELECT DISTINCT clip_id, mid FROM labels) AS l) AS original_labels,
    (SELECT COUNT(*) FROM classes) AS vocabulary,
    p.n AS needed_pairs,
    k.missing AS missing_scores,
    k.n - p.n AS duplicate_scores,   -- a pair with m >= 1 rows adds m - 1; an unscored pair one row
    k.invalid AS invalid_scores,
    (SELECT COUNT(*) FROM labels WHERE mid NOT IN (SELECT mid FROM classes)) AS labels_outside_vocabulary,
    (SELECT COUNT(*) FROM classes WHERE mid NOT IN (SELECT mid FROM labels)) AS classes_without_labels
FROM kept AS k CROSS JOIN pairs AS p
