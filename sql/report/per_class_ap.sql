-- Report: per-class AP and AUC of one evaluated model, best class first.
-- psla sql --file sql/report/per_class_ap.sql --root R   (with ${metrics} replaced by a metrics table)
SELECT m.mid, m.display_name, m.positives, m.ap, m.auc
FROM ${metrics} m
WHERE m.ap IS NOT NULL
ORDER BY m.ap DESC, m.mid;
