-- Label enhancement: classes whose clip count changed most, relative to the original count.
-- psla sql --file sql/audit/label_classes_most_changed.sql --root R
SELECT mid, display_name, threshold, original, added_type1, added_type2, enhanced,
       CASE WHEN original > 0 THEN CAST(enhanced AS DOUBLE) / original END AS growth
FROM label_changes
WHERE added > 0
ORDER BY growth DESC NULLS FIRST, added DESC, mid
LIMIT 50;
