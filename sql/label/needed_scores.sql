-- needed_scores.sql -- the needed pairs with their teacher scores: needed_pairs joined with the
-- result of the pass (score_pass.sql) by pair number. What needed_checks.sql, thresholds.sql,
-- type1.sql and type2.sql read.
--
-- Inputs: needed_pairs (pair, clip_id, mid, is_original, type1_via, type2_via: needed_pairs.sql),
--   pair_scores (pair, score, scored: score_pass.sql).
-- Placeholders: none.
-- Output: clip_id Utf8, mid Utf8, is_original Boolean, type1_via Int32, type2_via Int32 (as in
-- needed_pairs), score Float32 (null when not scored), scored Boolean; one row per row of
-- pair_scores (a pair scored twice is two rows, for needed_checks.sql to count); no order.
SELECT n.clip_id, n.mid, n.is_original, n.type1_via, n.type2_via, p.score, p.scored
FROM pair_scores AS p
JOIN needed_pairs AS n ON n.pair = p.pair
