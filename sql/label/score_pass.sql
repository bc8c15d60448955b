-- score_pass.sql -- the one pass of the rules over the teacher's scores: the scores of the pairs
-- in needed_pairs (the output of needed_pairs.sql, a table of ~16M rows at AudioSet scale), by
-- pair number.
--
-- The label stage plans this join as written (src/stages/label.rs query_score_pass): the left
-- side, needed_pairs, is the hash table, collected once and probed by every partition of the
-- teacher's scan (DataFusion's CollectLeft mode), so that the 1.076 billion score rows are
-- streamed through once, never shuffled between threads nor held in memory. The result is all
-- thresholds.sql, type1.sql and type2.sql read of the teacher's table (through needed_scores.sql).
-- It carries the pair's number, not its columns: the hash table and this result are alive
-- together at the end of the pass, and a number and a score are 9 bytes a row where the pair's
-- strings and flags were ~40 (needed_scores.sql joins them back once the hash table is gone).
-- It is a LEFT join so that a needed pair the teacher did not score is a row too (scored =
-- FALSE): needed_checks.sql counts those, the duplicates and the invalid scores, and the stage
-- refuses to go on if there is any.
--
-- Inputs: teacher_scores (clip_id, mid, score), needed_pairs (pair, clip_id, mid, ...).
-- Placeholders: none.
-- Output: pair Int32 (needed_pairs.pair), score Float32 (null when not scored), scored Boolean
-- (the teacher has a row for the pair); one row per score row of a needed pair, or one row with
-- scored = FALSE; no order.
SELECT n.pair, s.score, s.clip_id IS NOT NULL AS scored
FROM needed_pairs AS n
LEFT JOIN teacher_scores AS s
  ON s.clip_id = n.clip_id AND s.mid = n.mid
