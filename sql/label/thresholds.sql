-- thresholds.sql -- PSLA label enhancement, step 1: one score threshold per class.
--
-- For every class, take the teacher's scores for that class over the clips whose
-- ORIGINAL labels contain it (widened from the stored Float32 to Float64) and
-- reduce them to one threshold the way PSLA's fix_type1.py / fix_type2.py do
-- with numpy:
--   mean        np.mean(x)           sum(x) / n
--   median      np.median(x)         the middle value, or (a + b) / 2 of the two middle values
--   percentile  np.percentile(x, p)  numpy's default "linear" method:
--                 q = p / 100, v = (n - 1) * q, i = floor(v), t = v - i,
--                 a = sorted(x)[i], b = sorted(x)[min(i + 1, n - 1)],
--                 a + (b - a) * t          when t <  0.5
--                 b - (b - a) * (1 - t)    when t >= 0.5   (numpy's _lerp)
-- median and percentile are bit-exact with numpy. The mean is sum / n: it is
-- bit-exact when the Float64 sum is exact whatever the order (true for the
-- reference's 4-decimal scores); otherwise it may differ from numpy's pairwise
-- sum by a few ulp.
-- A class with fewer than ${min_support} labeled clips (in particular none) gets
-- no row, so no threshold, so the rules never add it.
--
-- Inputs:
--   needed_scores   the output of needed_scores.sql (clip_id, mid, is_original, ..., score Float32):
--                   the teacher's scores of the needed pairs; its is_original rows are the distinct
--                   original labels of vocabulary classes
-- Placeholders (substituted as text):
--   ${kind}         mean | median | percentile  (sits inside a string literal: substitute the bare word)
--   ${percentile}   numeric literal p, 0 <= p <= 100, as in np.percentile(x, p): 25, 10, 5, ...
--                   Only read when kind = percentile, but must always be a valid number (e.g. 50).
--   ${min_support}  integer >= 1; 1 reproduces PSLA.
--   ${threshold_kind}  the user-facing name written in the kind column: mean | median | p25 | p10 | p5.
--   PSLA's kinds: mean -> kind=mean; median -> kind=median; 25 / 10 / 5 -> kind=percentile, p=25 / 10 / 5.
-- Output: mid Utf8, kind Utf8, threshold Float64, support Int64 (labeled clips of the class), ordered by mid.
WITH labeled AS (
    -- one row per distinct original (clip, class) label, with the teacher's score
    SELECT mid, CAST(score AS DOUBLE) AS x
    FROM needed_scores
    WHERE is_original
),
per_class AS (
    SELECT mid, COUNT(*) AS n, SUM(x) AS total
    FROM labeled
    GROUP BY mid
    HAVING COUNT(*) >= ${min_support}
),
virtual_index AS (
    -- numpy: q = p / 100 and v = (n - 1) * q, both in Float64
    SELECT mid, n, total,
           CAST(n - 1 AS DOUBLE) * (CAST(${percentile} AS DOUBLE) / CAST(100 AS DOUBLE)) AS v
    FROM per_class
),
positions AS (
    -- 0-based ranks of the two order statistics to combine, and the weight t
    SELECT mid, n, total,
           CASE '${kind}'
               WHEN 'median' THEN (n - 1) / 2                        -- integer division
               WHEN 'percentile' THEN CASE WHEN v >= CAST(n - 1 AS DOUBLE) THEN n - 1
                                           ELSE CAST(floor(v) AS BIGINT) END
           END AS lo,
           CASE '${kind}'
               WHEN 'median' THEN n / 2                              -- integer division
               WHEN 'percentile' THEN CASE WHEN v >= CAST(n - 1 AS DOUBLE) THEN n - 1
                                           ELSE CAST(floor(v) AS BIGINT) + 1 END
           END AS hi,
           v - floor(v) AS t
    FROM virtual_index
),
ranked AS (
    -- 0-based rank of each score within its class (ties are equal values, so any order will do)
    SELECT mid, x,
           CAST(ROW_NUMBER() OVER (PARTITION BY mid ORDER BY x) AS BIGINT) - 1 AS pos
    FROM labeled
    WHERE '${kind}' <> 'mean'
),
picked AS (
    SELECT p.mid,
           MAX(CASE WHEN r.pos = p.lo THEN r.x END) AS a,
           MAX(CASE WHEN r.pos = p.hi THEN r.x END) AS b
    FROM positions AS p
    JOIN ranked AS r
      ON r.mid = p.mid AND (r.pos = p.lo OR r.pos = p.hi)
    GROUP BY p.mid
)
SELECT p.mid,
       '${threshold_kind}' AS kind,
       CASE '${kind}'
           WHEN 'mean' THEN p.total / CAST(p.n AS DOUBLE)
           WHEN 'median' THEN (k.a + k.b) / CAST(2 AS DOUBLE)
           WHEN 'percentile' THEN CASE WHEN p.t >= 0.5 THEN k.b - (k.b - k.a) * (1.0 - p.t)
                                       ELSE k.a + (k.b - k.a) * p.t END
       END AS threshold,
       p.n AS support
FROM positions AS p
LEFT JOIN picked AS k ON k.mid = p.mid
ORDER BY p.mid
