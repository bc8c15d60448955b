-- Classes of the vocabulary that no clip is labeled with.
-- psla sql --file sql/audit/classes_without_labels.sql --root R
SELECT c."index", c.mid, c.display_name
FROM classes c
WHERE NOT EXISTS (SELECT 1 FROM labels l WHERE l.mid = c.mid)
ORDER BY c."index";
