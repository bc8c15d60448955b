-- Report: labels per class before and after label enhancement, the classes that changed most first.
-- psla sql --file sql/report/label_counts.sql --root R
SELECT c.mid, c.display_name,
       count(*) FILTER (WHERE e.origin = 'original') AS original,
       count(*) AS enhanced
FROM labels_enhanced e
JOIN classes c ON c.mid = e.mid
GROUP BY c.mid, c.display_name
ORDER BY enhanced - original DESC, c.mid;
