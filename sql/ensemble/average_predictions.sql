-- average_predictions.sql -- PSLA's prediction ensemble: the (weighted) mean of several models'
-- probabilities for every (clip, class).
--
-- PSLA averages the sigmoid outputs of the checkpoints of one run (its "checkpoint ensemble"), of
-- runs with other seeds and of runs with other settings; each is the same mean of probabilities.
--
-- Inputs:
--   members  (member Utf8, weight Float64, clip_id Utf8, mid Utf8, score Float64): the union of the
--            members' predictions tables, each tagged with its name and weight. psla binds it as a
--            UNION ALL of one SELECT per member.
-- Placeholders (substituted as text):
--   ${members}  the UNION ALL that defines `members`
-- Output, ordered by clip_id, mid:
--   clip_id Utf8, mid Utf8,
--   score Float32     sum(weight * score) / sum(weight) over the members that scored (clip_id, mid),
--   members Int64     how many members scored it (psla refuses the result unless every (clip, class)
--                     was scored once by every member),
--   rows Int64        how many rows scored it (more than `members` means a member has duplicates).
WITH members AS (
${members}
)
SELECT clip_id,
       mid,
       CAST(SUM(weight * score) / SUM(weight) AS FLOAT) AS score,
       COUNT(DISTINCT member) AS members,
       COUNT(*) AS "rows"
FROM members
GROUP BY clip_id, mid
ORDER BY clip_id, mid
