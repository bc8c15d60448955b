-- split_labels.sql -- the original labels of the clips of some splits (the label stage's `splits`
-- parameter): PSLA enhances the training labels only, never the evaluation labels.
-- Inputs: all_labels (clip_id, mid), clips (clip_id, split, ...).
-- Placeholders: ${splits}  a SQL list of string literals, e.g. 'balanced_train', 'unbalanced_train'.
-- Output: clip_id Utf8, mid Utf8.
SELECT l.clip_id, l.mid
FROM all_labels AS l
JOIN clips AS c ON c.clip_id = l.clip_id
WHERE c.split IN (${splits})
