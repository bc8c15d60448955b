-- type2.sql -- PSLA label enhancement, Type II (fix_type2.py): add missing ANCESTOR classes.
--
-- For each clip and each of its ORIGINAL labels L, for each ancestor a of L: add a if
--   a is in the vocabulary (classes), a is not an original label of the clip,
--   a has a threshold, and score(clip, a) > threshold(a)   (strict, in Float64).
-- "Ancestor" is PSLA's: the transitive closure of child -> parent links, where a
-- link counts only when the PARENT is not abstract (restrictions == ["abstract"],
-- precomputed as ontology.is_abstract); ancestors.sql lists the relation.
-- needed_pairs.sql has found these candidates (type2_via, with the triggering
-- descendant) before the pass over the teacher's scores; what is left is the
-- threshold test. Additions never trigger further additions.
--
-- Inputs:
--   needed_scores   the output of needed_scores.sql (clip_id, mid, is_original, type1_via,
--                   type2_via: class_order ranks, score Float32)
--   thresholds      (mid Utf8, threshold Float64, ...)   the output of thresholds.sql
--   class_order     (mid Utf8, mid_rank Int32)           the output of class_order.sql
-- Placeholders: none.
-- Output: the ADDED labels only, one row per added (clip_id, mid), no order:
--   clip_id Utf8, mid Utf8, rule Utf8 = 'type2',
--   via_mid Utf8      the triggering original label: the nearest descendant of mid among the
--                     clip's original labels (fewest links), ties broken by the smallest mid,
--   score Float32     teacher score of (clip_id, mid),
--   threshold Float64 threshold of mid.
SELECT n.clip_id, n.mid, 'type2' AS rule, v.mid AS via_mid, n.score, t.threshold
FROM needed_scores AS n
JOIN thresholds AS t ON t.mid = n.mid
JOIN class_order AS v ON v.mid_rank = n.type2_via   -- the via's rank back to its mid; null: not a candidate
WHERE CAST(n.score AS DOUBLE) > t.threshold
