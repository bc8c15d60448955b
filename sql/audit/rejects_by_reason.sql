-- Ingest rejects grouped by source file and the first words of the reason.
-- psla sql --file sql/audit/rejects_by_reason.sql --root R
SELECT source, split_part(reason, ':', 1) AS reason, count(*) AS rows, min(line) AS first_line
FROM ingest_rejects
GROUP BY source, split_part(reason, ':', 1)
ORDER BY rows DESC;
