-- Label enhancement: the clips that gained the most labels, with what they had and what they gained.
-- psla sql --file sql/audit/label_clips_most_gained.sql --root R
SELECT clip_id,
       sum(CASE WHEN origin = 'original' THEN 1 ELSE 0 END) AS original,
       sum(CASE WHEN origin <> 'original' THEN 1 ELSE 0 END) AS added,
       string_agg(CASE WHEN origin <> 'original' THEN mid END, ' ') AS added_mids
FROM labels_enhanced
GROUP BY clip_id
ORDER BY added DESC, clip_id
LIMIT 50;
