-- changes.sql -- what label enhancement changed, per class of the vocabulary.
--
-- Inputs:
--   labels_enhanced  output of merge.sql (clip_id, mid, origin, ...)
--   classes          (index Int32, mid Utf8, display_name Utf8)
--   label_thresholds output of thresholds.sql (mid, kind, threshold, support)
-- Placeholders: none.
-- Output, one row per vocabulary class, ordered by index:
--   index Int32, mid Utf8, display_name Utf8,
--   threshold Float64   null when the class had no labeled clip (nothing can be added to it),
--   original Int64      clips originally labeled with the class,
--   added_type1 Int64   clips it was added to by the Type I rule (alone or with Type II),
--   added_type2 Int64   clips it was added to by the Type II rule (alone or with Type I),
--   added Int64         clips it was added to by any rule,
--   enhanced Int64      clips labeled with it after enhancement (original + added).
WITH counts AS (
    SELECT mid,
           SUM(CASE WHEN origin = 'original' THEN 1 ELSE 0 END) AS original,
           SUM(CASE WHEN origin IN ('type1', 'type1,type2') THEN 1 ELSE 0 END) AS added_type1,
           SUM(CASE WHEN origin IN ('type2', 'type1,type2') THEN 1 ELSE 0 END) AS added_type2,
           SUM(CASE WHEN origin <> 'original' THEN 1 ELSE 0 END) AS added,
           COUNT(*) AS enhanced
    FROM labels_enhanced
    GROUP BY mid
)
SELECT c."index", c.mid, c.display_name, t.threshold,
       CAST(COALESCE(n.original, 0) AS BIGINT) AS original,
       CAST(COALESCE(n.added_type1, 0) AS BIGINT) AS added_type1,
       CAST(COALESCE(n.added_type2, 0) AS BIGINT) AS added_type2,
       CAST(COALESCE(n.added, 0) AS BIGINT) AS added,
       CAST(COALESCE(n.enhanced, 0) AS BIGINT) AS enhanced
FROM classes AS c
LEFT JOIN counts AS n ON n.mid = c.mid
LEFT JOIN label_thresholds AS t ON t.mid = c.mid
ORDER BY c."index"
