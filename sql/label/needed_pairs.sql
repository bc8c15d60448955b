-- needed_pairs.sql -- the (clip, class) pairs whose teacher score the rules can read, with what
-- each pair is to the rules: an original label, a Type I candidate, a Type II candidate.
--
-- thresholds.sql reads the scores of the original labels, type1.sql those of the in-vocabulary
-- children of an original label (through a non-abstract parent), type2.sql those of its
-- in-vocabulary ancestors (through non-abstract parents). Nothing else of the teacher's table is
-- ever read, and these pairs are ~2% of it (AudioSet: ~16M of 1.076 billion), so the label stage
-- scans the teacher's scores once, keeping only these pairs and their flags (needed_scores.sql),
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
--   ontology_edges (parent, child), ontology_ancestors (descendant, ancestor, depth: ancestors.sql).
-- Placeholders (substituted as text):
--   ${enable_type1}  TRUE | FALSE: include the Type I candidates (children)
--   ${enable_type2}  TRUE | FALSE: include the Type II candidates (ancestors)
-- Output: one row per distinct pair, every mid a vocabulary class; no order:
--   clip_id Utf8, mid Utf8,
--   is_original Boolean  the pair is an original label (its score counts for the class threshold),
--   type1_via Utf8       not an original label and a Type I candidate: the original label that
--                        makes it one (its parent); if several do, the smallest mid; else null,
--   type2_via Utf8       not an original label and a Type II candidate: the original label that
--                        makes it one, the nearest descendant (fewest links), ties broken by the
--                        smallest mid; else null.
WITH parent_links AS (
    -- child -> parent links whose parent is not abstract
    SELECT DISTINCT e.child, e.parent
    FROM ontology_edges AS e
    JOIN ontology AS p ON p.id = e.parent
    WHERE NOT p.is_abstract
),
vocab_children AS (
    -- Type I: parent -> in-vocabulary child
    SELECT DISTINCT parent, child
    FROM parent_links
    WHERE child IN (SELECT mid FROM classes)
),
vocab_ancestors AS (
    -- Type II: descendant -> in-vocabulary ancestor, shortest chain per pair (one row per pair)
    SELECT descendant, ancestor, depth
    FROM ontology_ancestors
    WHERE ancestor IN (SELECT mid FROM classes)
),
original AS (
    SELECT DISTINCT clip_id, mid FROM labels
),
pairs AS (
    SELECT o.clip_id, o.mid, TRUE AS is_original,
           CAST(NULL AS VARCHAR) AS via1, CAST(NULL AS VARCHAR) AS via2_key
    FROM original AS o
    WHERE o.mid IN (SELECT mid FROM classes)
    UNION ALL
    SELECT o.clip_id, k.child, FALSE, o.mid, CAST(NULL AS VARCHAR)
    FROM original AS o
    JOIN vocab_children AS k ON k.parent = o.mid
    WHERE ${enable_type1}
    UNION ALL
    -- the key orders Type II's triggering labels by (depth, mid): the depth as two digits, then the mid
    SELECT o.clip_id, a.ancestor, FALSE, CAST(NULL AS VARCHAR),
           lpad(CAST(a.depth AS VARCHAR), 2, '0') || o.mid
    FROM original AS o
    JOIN vocab_ancestors AS a ON a.descendant = o.mid
    WHERE ${enable_type2}
)
SELECT clip_id, mid,
       bool_or(is_original) AS is_original,
       CASE WHEN bool_or(is_original) THEN CAST(NULL AS VARCHAR) ELSE MIN(via1) END AS type1_via,
       CASE WHEN bool_or(is_original) THEN CAST(NULL AS VARCHAR) ELSE substr(MIN(via2_key), 3) END AS type2_via
FROM pairs
GROUP BY clip_id, mid
