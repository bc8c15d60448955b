-- The demo study (pipelines/demo_study.toml): each setting's eval mAP over its seeds, mean and spread.
-- runs: models evaluated (seeds; 1 for the seed ensemble); map_std: the sample standard deviation over seeds
-- (null for one run); rare_map: mAP over the rarer half of the classes.
SELECT
  comparison,
  setting,
  count(*) AS runs,
  round(avg(map), 3) AS map_mean,
  round(stddev(map), 3) AS map_std,
  round(min(map), 3) AS map_min,
  round(max(map), 3) AS map_max,
  round(avg(mauc), 3) AS mauc_mean,
  round(avg(rare_map), 3) AS rare_map_mean,
  round(stddev(rare_map), 3) AS rare_map_std
FROM study_results
GROUP BY comparison, setting
ORDER BY min(ord)
