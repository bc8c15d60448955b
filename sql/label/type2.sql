-- type2.sql -- PSLA label enhancement, Type II (fix_type2.py): add missing ANCESTOR classes.
--
-- For each clip and each of its ORIGINAL labels L, for each ancestor a of L: add a if
--   a is in the vocabulary (classes), a is not an original label of the clip,
--   a has a threshold, and score(clip, a) > threshold(a)   (strict, in Float64).
-- "Ancestor" is PSLA's: the transitive closure of child -> parent links, where a
-- link counts only when the PARENT is not abstract (restrictions == ["abstract"],
-- precomputed as ontology.is_abstract). An abstract class therefore is never an
-- ancestor and the walk does not continue through it; L itself may be abstract.
-- Additions never trigger further additions. Only candidate (clip, class) pairs
-- are joined to needed_scores.
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
-- Requires datafusion.execution.enable_recursive_ctes = true (the default in DataFusion 55).
-- The recursive CTE is the one in ancestors.sql (keep the two in step); the
-- depth guard (< 64) only stops a runaway recursion on a cyclic (corrupt) ontology.
-- Output: the ADDED labels only, one row per added (clip_id, mid), ordered by clip_id, mid:
--   clip_id Utf8, mid Utf8, rule Utf8 = 'type2',
--   via_mid Utf8      the triggering original label: the nearest descendant of mid among the
--                     clip's original labels (fewest links), ties broken by the smallest mid,
--   score Float32     teacher score of (clip_id, mid),
--   threshold Float64 threshold of mid.
WITH RECURSIVE parent_links AS (
    SELECT DISTINCT e.child, e.parent
    FROM ontology_edges AS e
    JOIN ontology AS p ON p.id = e.parent
    WHERE NOT p.is_abstract
),
walk (descendant, ancestor, depth) AS (
    SELECT child, parent, CAST(1 AS BIGINT) FROM parent_links
    UNION ALL
    SELECT w.descendant, l.parent, w.depth + 1
    FROM walk AS w
    JOIN parent_links AS l ON l.child = w.ancestor
    WHERE w.depth < 64
),
ancestors AS (
    -- closure restricted to ancestors in the vocabulary, shortest chain per pair
    SELECT descendant, ancestor, MIN(depth) AS depth
    FROM walk
    WHERE ancestor IN (SELECT mid FROM classes)
    GROUP BY descendant, ancestor
),
original AS (
    SELECT DISTINCT clip_id, mid FROM labels
),
candidates AS (
    -- one row per (clip, ancestor, triggering original label)
    SELECT o.clip_id, a.ancestor AS mid, o.mid AS via_mid,
           ROW_NUMBER() OVER (PARTITION BY o.clip_id, a.ancestor
                              ORDER BY a.depth, o.mid) AS pick
    FROM original AS o
    JOIN ancestors AS a ON a.descendant = o.mid
),
new_candidates AS (
    -- one row per (clip, ancestor); drop ancestors the clip already has, and classes with no threshold
    SELECT c.clip_id, c.mid, c.via_mid, t.threshold
    FROM candidates AS c
    JOIN thresholds AS t ON t.mid = c.mid
    WHERE c.pick = 1
      AND NOT EXISTS (
          SELECT 1 FROM original AS o WHERE o.clip_id = c.clip_id AND o.mid = c.mid
      )
)
SELECT n.clip_id, n.mid, 'type2' AS rule, n.via_mid, s.score, n.threshold
FROM new_candidates AS n
JOIN needed_scores AS s
  ON s.clip_id = n.clip_id AND s.mid = n.mid
WHERE CAST(s.score AS DOUBLE) > n.threshold
ORDER BY n.clip_id, n.mid
