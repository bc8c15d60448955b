-- checks.sql -- the label stage's `check = "full"` (`psla label --check full`): input checks over
-- the whole teacher table, as one row of counts, before anything else.
--
-- With it the stage refuses to run when any labeled clip's teacher scores are missing, duplicated
-- or invalid, whether the rules read them or not. (The default, needed_checks.sql, checks only the
-- scores the rules read, from the one pass the stage makes anyway.)
-- One pass over teacher_scores, grouped by clip (memory grows with clips, not with scores): a clip
-- is scored correctly when it has as many vocabulary rows as the vocabulary has classes and the
-- sums of their class indexes and squared indexes are those of the vocabulary. Any one or two
-- missing or duplicated classes always change these; only an unlikely mix of three or more
-- duplicates and as many missing classes with equal sums could pass.
-- Inputs: labels (clip_id, mid), teacher_scores (clip_id, mid, score), classes (index, mid, display_name).
-- Placeholders: none.
-- Output (one row, all Int64):
--   labeled_clips              distinct clips with at least one original label
--   original_labels            distinct original (clip, class) labels
--   vocabulary                 classes in the vocabulary
--   scores                     teacher rows for (labeled clip, vocabulary class) pairs
--   clips_without_scores       labeled clips with no teacher score at all
--   clips_with_wrong_scores    labeled clips not scored exactly once for every class
--   invalid_scores             rows whose score is null, NaN or outside [0, 1]
--   labels_outside_vocabulary  original labels whose mid is not a vocabulary class
--   classes_without_labels     vocabulary classes no clip is labeled with (they get no threshold)
WITH labeled AS (
    SELECT DISTINCT clip_id FROM labels
),
vocab AS (
    SELECT mid, CAST("index" AS BIGINT) AS i, CAST("index" AS BIGINT) * CAST("index" AS BIGINT) AS i2 FROM classes
),
expected AS (
    SELECT COUNT(*) AS n, SUM(i) AS s1, SUM(i2) AS s2 FROM vocab
),
scored AS (
    -- the single pass over teacher_scores: every scored clip, labeled or not (joining the labeled
    -- clips first would cost a hash lookup per score row; joining the ~2M per-clip rows after
    -- the grouping costs nothing)
    SELECT s.clip_id,
           COUNT(*) AS n,
           SUM(v.i) AS s1,
           SUM(v.i2) AS s2,
           SUM(CASE WHEN s.score IS NULL OR isnan(CAST(s.score AS DOUBLE))
                         OR s.score < 0 OR s.score > 1 THEN 1 ELSE 0 END) AS invalid
    FROM teacher_scores AS s
    JOIN vocab AS v ON v.mid = s.mid
    GROUP BY s.clip_id
),
per_clip AS (
    -- the labeled clips' rows of scored
    SELECT p.*
    FROM scored AS p
    JOIN labeled AS l ON l.clip_id = p.clip_id
),
clip_summary AS (
    SELECT COUNT(*) AS scored_clips,
           CAST(COALESCE(SUM(p.n), 0) AS BIGINT) AS scores,
           CAST(COALESCE(SUM(CASE WHEN p.n <> e.n OR p.s1 <> e.s1 OR p.s2 <> e.s2 THEN 1 ELSE 0 END), 0) AS BIGINT)
               AS clips_with_wrong_scores,
           CAST(COALESCE(SUM(p.invalid), 0) AS BIGINT) AS invalid_scores
    FROM per_clip AS p CROSS JOIN expected AS e
)
SELECT
    (SELECT COUNT(*) FROM labeled) AS labeled_clips,
    (SELECT COUNT(*) FROM (SELECT DISTINCT clip_id, mid FROM labels) AS l) AS original_labels,
    (SELECT n FROM expected) AS vocabulary,
    cs.scores,
    (SELECT COUNT(*) FROM labeled) - cs.scored_clips AS clips_without_scores,
    cs.clips_with_wrong_scores,
    cs.invalid_scores,
    (SELECT COUNT(*) FROM labels WHERE mid NOT IN (SELECT mid FROM vocab)) AS labels_outside_vocabulary,
    (SELECT COUNT(*) FROM vocab WHERE mid NOT IN (SELECT mid FROM labels)) AS classes_without_labels
FROM clip_summary AS cs
