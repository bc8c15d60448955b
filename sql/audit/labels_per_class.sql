-- Labels per class: how many clips carry each class of the vocabulary (zero included), most first.
-- psla sql --file sql/audit/labels_per_class.sql --root R
SELECT c."index", c.mid, c.display_name, count(l.clip_id) AS clips
FROM classes c
LEFT JOIN labels l ON l.mid = c.mid
GROUP BY c."index", c.mid, c.display_name
ORDER BY clips DESC, c."index";
