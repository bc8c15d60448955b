-- needed_pairs.sql -- the (clip, class) pairs whose teacher score the rules can read.
--
-- thresholds.sql reads the scores of the original labels, type1.sql those of the in-vocabulary
-- children of an original label (through a non-abstract parent), type2.sql those of its
-- in-vocabulary ancestors (through non-abstract parents). Nothing else of the teacher's table is
-- ever read, and these pairs are ~2% of it (AudioSet: ~16M of 1.076 billion), so the label stage
-- scans the teacher's scores once, keeping only these pairs (needed_scores.sql), and runs the
-- rules on what it kept: the same result as running them on the whole table.
-- Keep the links in step with type1.sql (child_links) and type2.sql (parent_links, walk): a
-- superset here only costs memory, a subset would lose additions (tests/label.rs would show it).
--
-- Inputs: labels (clip_id, mid), classes (index, mid, display_name), ontology (id, ..., is_abstract),
--   ontology_edges (parent, child).
-- Placeholders (substituted as text):
--   ${enable_type1}  TRUE | FALSE: include the Type I candidates (children)
--   ${enable_type2}  TRUE | FALSE: include the Type II candidates (ancestors)
-- Requires datafusion.execution.enable_recursive_ctes = true (the default in DataFusion 55).
-- Output: clip_id Utf8, mid Utf8, one row per distinct pair, every mid a vocabulary class; no order.
WITH RECURSIVE parent_links AS (
    -- child -> parent links whose parent is not abstract (PSLA's literal test, see type2.sql)
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
related (mid, other) AS (
    -- type1: a label's direct children (its links as a parent); type2: its ancestors
    SELECT parent, child FROM parent_links WHERE ${enable_type1}
    UNION
    SELECT descendant, ancestor FROM walk WHERE ${enable_type2}
),
vocab_related AS (
    SELECT r.mid, r.other
    FROM related AS r
    WHERE r.other IN (SELECT mid FROM classes)
),
original AS (
    SELECT DISTINCT clip_id, mid FROM labels
)
SELECT o.clip_id, o.mid
FROM original AS o
WHERE o.mid IN (SELECT mid FROM classes)
UNION
SELECT o.clip_id, r.other AS mid
FROM original AS o
JOIN vocab_related AS r ON r.mid = o.mid
