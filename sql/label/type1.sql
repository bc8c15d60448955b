-- type1.sql -- PSLA label enhancement, Type I (fix_type1.py): add missing CHILD classes.
--
-- For each clip and each of its ORIGINAL labels L whose ontology entry is not
-- abstract (PSLA's literal test restrictions == ["abstract"], precomputed as
-- ontology.is_abstract), for each direct child c of L (ontology_edges): add c if
--   c is in the vocabulary (classes), c is not an original label of the clip,
--   c has a threshold, and score(clip, c) > threshold(c)   (strict, in Float64).
-- Labels with no ontology entry trigger nothing. Additions never trigger further
-- additions. Only candidate (clip, class) pairs are joined to needed_scores.
--
-- Inputs:
--   labels          (clip_id Utf8, mid Utf8)
--   needed_scores   (clip_id Utf8, mid Utf8, score Float32)  the teacher's scores: the stage passes those of
--                   the pairs needed_pairs.sql lists (needed_scores.sql); the whole teacher table gives the same result
--   classes         (index Int32, mid Utf8, display_name Utf8)
--   ontology        (id Utf8, ..., is_abstract Boolean, ...)
--   ontology_edges  (parent Utf8, child Utf8)
--   thresholds      (mid Utf8, threshold Float64, support Int64)   the output of thresholds.sql
-- Placeholders: none.
-- Output: the ADDED labels only, one row per added (clip_id, mid), ordered by clip_id, mid:
--   clip_id Utf8, mid Utf8, rule Utf8 = 'type1',
--   via_mid Utf8      the triggering original label (the parent); if several original
--                     labels are parents of the same added class, the smallest mid,
--   score Float32     teacher score of (clip_id, mid),
--   threshold Float64 threshold of mid.
WITH original AS (
    SELECT DISTINCT clip_id, mid FROM labels
),
child_links AS (
    -- parent -> child links whose parent is not abstract and whose child is in the vocabulary
    SELECT DISTINCT e.parent, e.child
    FROM ontology_edges AS e
    JOIN ontology AS p ON p.id = e.parent
    WHERE NOT p.is_abstract
      AND e.child IN (SELECT mid FROM classes)
),
candidates AS (
    -- (clip, child) pairs reachable from an original label, with the smallest triggering parent
    SELECT o.clip_id, k.child AS mid, MIN(o.mid) AS via_mid
    FROM original AS o
    JOIN child_links AS k ON k.parent = o.mid
    GROUP BY o.clip_id, k.child
),
new_candidates AS (
    -- drop children the clip already has, and classes with no threshold
    SELECT c.clip_id, c.mid, c.via_mid, t.threshold
    FROM candidates AS c
    JOIN thresholds AS t ON t.mid = c.mid
    WHERE NOT EXISTS (
        SELECT 1 FROM original AS o WHERE o.clip_id = c.clip_id AND o.mid = c.mid
    )
)
SELECT n.clip_id, n.mid, 'type1' AS rule, n.via_mid, s.score, n.threshold
FROM new_candidates AS n
JOIN needed_scores AS s
  ON s.clip_id = n.clip_id AND s.mid = n.mid
WHERE CAST(s.score AS DOUBLE) > n.threshold
ORDER BY n.clip_id, n.mid
