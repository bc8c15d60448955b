-- Label enhancement: labels added per class and rule, most first (after the label stage).
-- psla sql --file sql/audit/label_additions_per_class.sql --root R
SELECT c.mid, c.display_name, e.origin AS rule, count(*) AS added,
       min(e.threshold) AS threshold, avg(e.score) AS mean_score
FROM labels_enhanced e
JOIN classes c ON c.mid = e.mid
WHERE e.origin <> 'original'
GROUP BY c.mid, c.display_name, e.origin
ORDER BY added DESC, c.mid, rule;
