-- merge.sql -- PSLA label enhancement, final step (merge_type_1_2.py): the full enhanced label set,
-- with the provenance of every added label.
--
-- The original labels plus the labels added by the enabled rules, one row per
-- distinct (clip_id, mid). With type1 only, type2 only, or both enabled, the set
-- of (clip_id, mid) equals PSLA's type1, type2 and type1_2 label sets; with
-- neither it is the original labels.
--
-- Inputs:
--   labels       (clip_id Utf8, mid Utf8)   original labels
--   added_type1  output of type1.sql (clip_id, mid, rule, via_mid, score, threshold): no original label
--   added_type2  output of type2.sql (same columns): no original label
--   Both added_* tables must be registered even when their rule is disabled
--   (an empty table with the same columns will do); a disabled rule's rows are ignored.
-- Placeholders (substituted as text):
--   ${enable_type1}    TRUE | FALSE
--   ${enable_type2}    TRUE | FALSE
--   ${threshold_kind}  mean | median | p25 | p10 | p5 (written on added rows)
-- Output, ordered by clip_id, mid:
--   clip_id Utf8, mid Utf8,
--   origin Utf8          'original' | 'type1' | 'type2' | 'type1,type2' (added by both rules),
--   via_mid Utf8         added rows: the original label that caused the addition (type1's when both
--                        rules added it); null on original rows,
--   score Float32        added rows: the teacher's score of (clip_id, mid),
--   threshold Float64    added rows: the threshold the score exceeded,
--   threshold_kind Utf8  added rows: the threshold kind.
WITH original AS (
    SELECT DISTINCT clip_id, mid FROM labels
),
added AS (
    SELECT clip_id, mid, 1 AS by_type1, 0 AS by_type2, via_mid, score, threshold
    FROM added_type1 WHERE ${enable_type1}
    UNION ALL
    SELECT clip_id, mid, 0 AS by_type1, 1 AS by_type2, via_mid, score, threshold
    FROM added_type2 WHERE ${enable_type2}
),
added_per_label AS (
    SELECT a.clip_id, a.mid,
           MAX(a.by_type1) AS by_type1,
           MAX(a.by_type2) AS by_type2,
           first_value(a.via_mid ORDER BY a.by_type1 DESC) AS via_mid,
           MIN(a.score) AS score,          -- the same (clip, class) score for both rules
           MIN(a.threshold) AS threshold   -- the same class threshold for both rules
    FROM added AS a      -- never an original label: needed_pairs.sql leaves those no via
    GROUP BY a.clip_id, a.mid
)
SELECT clip_id, mid, origin, via_mid, score, threshold, threshold_kind
FROM (
    SELECT clip_id, mid, 'original' AS origin,
           CAST(NULL AS VARCHAR) AS via_mid,
           CAST(NULL AS FLOAT) AS score,
           CAST(NULL AS DOUBLE) AS threshold,
           CAST(NULL AS VARCHAR) AS threshold_kind
    FROM original
    UNION ALL
    SELECT clip_id, mid,
           CASE WHEN by_type1 = 1 AND by_type2 = 1 THEN 'type1,type2'
                WHEN by_type1 = 1 THEN 'type1'
                ELSE 'type2' END AS origin,
           via_mid,
           CAST(score AS FLOAT) AS score,
           CAST(threshold AS DOUBLE) AS threshold,
           '${threshold_kind}' AS threshold_kind
    FROM added_per_label
) AS enhanced
ORDER BY clip_id, mid
