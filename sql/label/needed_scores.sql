-- needed_scores.sql -- the one pass of the rules over the teacher's scores: the scores of the
-- pairs in needed_pairs (the output of needed_pairs.sql, a table of ~16M rows at AudioSet scale).
--
-- The label stage plans this join as written (src/stages/label.rs query_needed_scores): the left
-- side, needed_pairs, is the hash table, collected once and probed by every partition of the
-- teacher's scan (DataFusion's CollectLeft mode), so that the 1.076 billion score rows are
-- streamed through once, never shuffled between threads nor held in memory. The result stands in for
-- the whole teacher table in thresholds.sql, type1.sql and type2.sql, which read it as needed_scores.
--
-- Inputs: teacher_scores (clip_id, mid, score), needed_pairs (clip_id, mid).
-- Placeholders: none.
-- Output: clip_id Utf8, mid Utf8, score Float32; one row per score row of a needed pair
-- (checks.sql has already refused duplicate scores); no order.
SELECT s.clip_id, s.mid, s.score
FROM needed_pairs AS n
JOIN teacher_scores AS s
  ON s.clip_id = n.clip_id AND s.mid = n.mid
