-- Label enhancement: the most frequent (original label -> added label) pairs, i.e. which parent most
-- often gained a child (type1) and which child most often gained an ancestor (type2).
-- psla sql --file sql/audit/label_top_pairs.sql --root R
SELECT e.via_mid, v.display_name AS via_name, e.mid AS added_mid, a.display_name AS added_name,
       e.origin AS rule, count(*) AS clips
FROM labels_enhanced e
LEFT JOIN classes v ON v.mid = e.via_mid
LEFT JOIN classes a ON a.mid = e.mid
WHERE e.origin <> 'original'
GROUP BY e.via_mid, v.display_name, e.mid, a.display_name, e.origin
ORDER BY clips DESC, e.via_mid, e.mid
LIMIT 50;
