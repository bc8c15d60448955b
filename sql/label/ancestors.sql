-- ancestors.sql -- the ancestor relation PSLA's fix_type2.py walks: the label stage registers its
-- result as ontology_ancestors for needed_pairs.sql (and it is useful for audits on its own).
--
-- PSLA (generate_parent_dict + dfs) records a parent link child -> parent only
-- when the PARENT is not abstract (restrictions == ["abstract"], precomputed as
-- ontology.is_abstract), then takes the transitive closure of those links. So an
-- abstract class is never an ancestor, and the walk stops at it: the ancestors
-- of an abstract class are not reached through it. The child of a link may be
-- abstract or out of vocabulary; vocabulary filtering is left to the caller.
--
-- Inputs:
--   ontology        (id Utf8, ..., is_abstract Boolean, ...)
--   ontology_edges  (parent Utf8, child Utf8)
-- Placeholders: none.
-- Requires datafusion.execution.enable_recursive_ctes = true (the default in DataFusion 55).
-- The ontology must be acyclic; the depth guard (< 64) only stops a runaway
-- recursion on corrupt input (AudioSet's deepest chain is 6 links).
-- Output: descendant Utf8, ancestor Utf8, depth Int64 (length of the SHORTEST
-- chain of counted links, >= 1), one row per pair, ordered by descendant, ancestor.
WITH RECURSIVE parent_links AS (
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
)
SELECT descendant, ancestor, MIN(depth) AS depth
FROM walk
GROUP BY descendant, ancestor
ORDER BY descendant, ancestor
