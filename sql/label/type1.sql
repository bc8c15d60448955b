-- type1.sql -- PSLA label enhancement, Type I (fix_type1.py): add missing CHILD classes.
--
-- For each clip and each of its ORIGINAL labels L whose ontology entry is not
-- abstract (PSLA's literal test restrictions == ["abstract"], precomputed as
-- ontology.is_abstract), for each direct child c of L (ontology_edges): add c if
--   c is in the vocabulary (classes), c is not an original label of the clip,
--   c has a threshold, and score(clip, c) > threshold(c)   (strict, in Float64).
-- needed_pairs.sql has found these candidates (type1_via, with the triggering parent)
-- before the pass over the teacher's scores; what is left is the threshold test.
-- Additions never trigger further additions.
--
-- Inputs:
--   needed_scores   the output of needed_scores.sql (clip_id, mid, is_original, type1_via,
--                   type2_via: class_order ranks, score Float32)
--   thresholds      (mid Utf8, threshold Float64, ...)   the output of thresholds.sql
--   class_order     (mid Utf8, mid_rank Int32)           the output of class_order.sql
-- Placeholders: none.
-- Output: the ADDED labels only, one row per added (clip_id, mid), no order:
--   clip_id Utf8, mid Utf8, rule Utf8 = 'type1',
--   via_mid Utf8      the triggering original label (the parent); if several original
--                     labels are parents of the same added class, the smallest mid,
--   score Float32     teacher score of (clip_id, mid),
--   threshold Float64 threshold of mid.
SELECT n.clip_id, n.mid, 'type1' AS rule, v.mid AS via_mid, n.score, t.threshold
FROM needed_scores AS n
JOIN thresholds AS t ON t.mid = n.mid
JOIN class_order AS v ON v.mid_rank = n.type1_via   -- the via's rank back to its mid; null: not a candidate
WHERE CAST(n.score AS DOUBLE) > t.threshold
