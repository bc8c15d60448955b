-- Report: what balanced sampling did per class, over all epochs drawn: the share of clips that carry the
-- class against the share of draws that carry it (uniform sampling keeps the two equal).
-- psla sql --file sql/report/class_exposure.sql --root R
WITH totals AS (
    SELECT (SELECT count(*) FROM sample_weights) AS clips,
           (SELECT count(*) FROM epoch_draws) AS draws
)
SELECT x.mid, c.display_name,
       max(x.clips_with_label) AS clips_with_label,
       sum(x.draws) AS draws,
       CAST(max(x.clips_with_label) AS DOUBLE) / max(t.clips) AS clip_share,
       CAST(sum(x.draws) AS DOUBLE) / max(t.draws) AS draw_share,
       avg(x.expected_share) AS expected_share
FROM class_exposure x
JOIN classes c ON c.mid = x.mid
CROSS JOIN totals t
GROUP BY x.mid, c.display_name
ORDER BY clips_with_label DESC, x.mid;
