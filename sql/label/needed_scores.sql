-- needed_scores.sql -- the one pass of the rules over the teacher's scores: the scores of the
-- pairs in needed_pairs (the output of needed_pairs.sql, a table of ~16M rows at AudioSet scale),
-- with their flags.
--
-- The label stage plans this join as written (src/stages/label.rs query_needed_scores): the left
-- side, needed_pairs, is the hash table, collected once and probed by every partition of the
-- teacher's scan (DataFusion's CollectLeft mode), so that the 1.076 billion score rows are
-- streamed through once, never shuffled between threads nor held in memory. The result is all
-- thresholds.sql, type1.sql and type2.sql read of the teacher's table.
-- It is a LEFT join so that a needed pair the teacher did not score is a row too (scored =
-- FALSE): needed_checks.sql counts those, the duplicates and the invalid scores from this table
-- alone, and the stage refuses to go on if there is any.
--
-- Inputs: teacher_scores (clip_id, mid, score), needed_pairs (clip_id, mid, is_original, type1_via, type2_via).
-- Placeholders: none.
-- Output: clip_id Utf8, mid Utf8, is_original Boolean, type1_via Int32, type2_via Int32 (as in
-- needed_pairs), score Float32 (null when not scored), scored Boolean (the teacher has a row for
-- the pair); one row per score row of a needed pair, or one row with scored = FALSE; no order.
SELECT n.clip_id, n.mid, n.is_original, n.type1_via, n.type2_via, s.score,
       s.clip_id IS NOT NULL AS scored
FROM needed_pairs AS n
LEFT JOIN teacher_scores AS s
  ON s.clip_id = n.clip_id AND s.mid = n.mid
