-- member.sql -- one member of an ensemble, as a row source of average_predictions.sql's `members`.
-- Placeholders (substituted as text):
--   ${member}  the member's name (its table or file), written on its rows
--   ${table}   the SQL table psla registered the member's predictions under
--   ${weight}  the member's weight (a positive number)
SELECT '${member}' AS member, CAST(${weight} AS DOUBLE) AS weight, clip_id, mid, CAST(score AS DOUBLE) AS score
FROM ${table}
