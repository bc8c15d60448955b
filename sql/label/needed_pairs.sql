-- needed_pairs.sql -- the (clip, class) pairs whose teacher score the rules can read, with what
-- each pair is to the rules: an original label, a Type I candidate, a Type II candidate.
--
-- thresholds.sql reads the scores of the original labels, type1.sql those of the in-vocabulary
-- children of an original label (through a non-abstract parent), type2.sql those of its
-- in-vocabulary ancestors (through non-abstract parents). Nothing else of the teacher's table is
-- ever read, and these pairs are ~2% of it (AudioSet: ~16M of 1.076 billion), so the label stage
-- scans the teacher's scores once, keeping only these pairs' scores (score_pass.sql),
-- and the rules are then filters of what it kept: the same result as PSLA's scripts on the whole
-- table (tests/label.rs checks all 15 threshold kinds x rule sets against them).
--
-- Type I (fix_type1.py): for each ORIGINAL label L whose ontology entry is not abstract (PSLA's
--   literal test restrictions == ["abstract"], precomputed as ontology.is_abstract), each direct
--   child c of L (ontology_edges) in the vocabulary is a candidate, unless c is an original label.
-- Type II (fix_type2.py): for each ORIGINAL label L, each ancestor a of L in the vocabulary is a
--   candidate, unless a is an original label. "Ancestor" is PSLA's: the transitive closure of
--   child -> parent links, where a link counts only when the PARENT is not abstract. An abstract
--   class therefore is never an ancestor and the walk does not continue through it; L itself may
--   be abstract. That closure is ontology_ancestors, the result of ancestors.sql, which the label
--   stage runs first (a recursive CTE over the ~600 ontology classes; in this process even when
--   the rest runs on a Ballista cluster, whose executors cannot run recursive queries).
-- Candidates come from original labels only: additions never trigger further additions. Labels
-- with no ontology entry trigger nothing.
--
-- Inputs: labels (clip_id, mid), classes (index, mid, display_name), ontology (id, ..., is_abstract),
--   ontology_edges (parent, child), ontology_ancestors (descendant, ancestor, depth: ancestors.sql),
--   class_order (mid, mid_rank: class_order.sql).
-- Placeholders (substituted as text):
--   ${enable_type1}  TRUE | FALSE: include the Type I candidates (children)
--   ${enable_type2}  TRUE | FALSE: include the Type II candidates (ancestors)
-- Output: one row per distinct pair, every mid a vocabulary class; no order:
--   pair Int32           the pair's number, 1..n (what score_pass.sql returns instead of the pair),
--   clip_id Utf8, mid Utf8,
--   is_original Boolean  the pair is an original label (its score counts for the class threshold),
--   type1_via Int32      not an original label and a Type I candidate: the original label that
--                        makes it one (its parent), as its class_order rank; if several do, the
--                        smallest mid; else null,
--   type2_via Int32      not an original label and a Type II candidate: the original label that
--                        makes it one, the nearest descendant (fewest links), ties broken by the
--                        smallest mid, as its class_order rank; else null.
-- The vias are ranks, not mids, so that the GROUP BY keeps an integer per pair and rule (the MIN
-- of a string keeps a string per pair) and the pass carries two integers per pair.
WITH parent_links AS (
    -- child -> parent links whose parent is not abstract
    SELECT DISTINCT e.child, e.parent
    FROM ontology_edges AS e
    JOIN ontology AS p ON p.id = e.parent
    WHERE NOT p.is_abstract
),
vocab_children AS (
    -- Type I: parent -> in-vocabulary child, with the parent's rank
    SELECT DISTINCT l.parent, l.child, r.mid_rank AS parent_rank
    FROM parent_links AS l
    JOIN class_order AS r ON r.mid = l.parent
    WHERE l.child IN (SELECT mid FROM classes)
),
vocab_ancestors AS (
    -- Type II: descendant -> in-vocabulary ancestor, shortest chain per pair (one row per pair);
    -- the key orders the descendants that make a candidate by (depth, mid): depth x 2^32 + rank
    SELECT a.descendant, a.ancestor, a.depth * 4294967296 + r.mid_rank AS via_key
    FROM ontology_ancestors AS a
    JOIN class_order AS r ON r.mid = a.descendant
    WHERE a.ancestor IN (SELECT mid FROM classes)
),
original AS (
    SELECT DISTINCT clip_id, mid FROM labels
),
pairs AS (
    SELECT o.clip_id, o.mid, TRUE AS is_original,
           CAST(NULL AS INT) AS via1, CAST(NULL AS BIGINT) AS via2_key
    FROM original AS o
    WHERE o.mid IN (SELECT mid FROM classes)
    UNION ALL
    SELECT o.clip_id, k.child, FALSE, k.parent_rank, CAST(NULL AS BIGINT)
    FROM original AS o
    JOIN vocab_children AS k ON k.parent = o.mid
    WHERE ${enable_type1}
    UNION ALL
    SELECT o.clip_id, a.ancestor, FALSE, CAST(NULL AS INT), a.via_key
    FROM original AS o
    JOIN vocab_ancestors AS a ON a.descendant = o.mid
    WHERE ${enable_type2}
)
SELECT CAST(ROW_NUMBER() OVER () AS INT) AS pair, clip_id, mid, is_original, type1_via, type2_via
FROM (
    SELECT clip_id, mid,
           bool_or(is_original) AS is_original,
           CASE WHEN bool_or(is_original) THEN CAST(NULL AS INT) ELSE MIN(via1) END AS type1_via,
           CASE WHEN bool_or(is_original) THEN CAST(NULL AS INT) ELSE CAST(MIN(via2_key) % 4294967296 AS INT) END AS type2_via
    FROM pairs
    GROUP BY clip_id, mid
) AS grouped
