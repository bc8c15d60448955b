-- class_order.sql -- every ontology class with its rank in mid order (byte order, as MIN and ORDER
-- BY compare Utf8), for needed_pairs.sql and the rules.
--
-- The rules name the original label that caused each addition (via_mid), the smallest mid when
-- several do. needed_pairs.sql picks it for ~16 million candidate pairs at AudioSet scale as the
-- MIN of this rank, an integer, instead of the MIN of the mid string (per-pair string state in
-- the GROUP BY), and type1.sql / type2.sql turn the rank of the few added labels back into the
-- mid. The label stage registers the result as class_order.
--
-- Inputs: ontology (id, ...).
-- Placeholders: none.
-- Output: mid Utf8, mid_rank Int32 (1 = the smallest id), one row per ontology id.
SELECT id AS mid, CAST(ROW_NUMBER() OVER (ORDER BY id) AS INT) AS mid_rank
FROM (SELECT DISTINCT id FROM ontology) AS o
