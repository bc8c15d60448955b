//! Audio-tagging metrics as PSLA reports them (its `utilities/stats.py`, which calls scikit-learn):
//! per-class average precision and ROC AUC, their unweighted means, and d-prime.
//!
//! - [`average_precision`] equals `sklearn.metrics.average_precision_score`: the step-wise sum
//!   `sum_n (R_n - R_{n-1}) P_n` over the distinct score thresholds, from the highest down (tied
//!   scores form one threshold).
//! - [`roc_auc`] equals `sklearn.metrics.roc_auc_score`: the trapezoidal area under the ROC curve
//!   whose points are the distinct thresholds (so a tie between a positive and a negative counts half).
//! - [`d_prime`] is `sqrt(2) * Phi^-1(auc)`.
//!
//! A class with no positive (or no negative) example has no AP/AUC: the functions return `None`,
//! where scikit-learn warns or raises and PSLA crashes.

/// Pairs (score, is_positive) sorted by score, descending; ties keep input order (irrelevant: tied
/// scores are handled as one threshold).
fn sorted(scores: &[f64], positive: &[bool]) -> Vec<(f64, bool)> {
    let mut pairs: Vec<(f64, bool)> = scores.iter().copied().zip(positive.iter().copied()).collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    pairs
}

/// Cumulative (true positives, false positives) at each distinct threshold, highest first.
fn thresholds(pairs: &[(f64, bool)]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    for (i, &(s, pos)) in pairs.iter().enumerate() {
        if pos {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = pairs.get(i + 1).is_none_or(|next| next.0 != s);
        if last_of_tie {
            out.push((tp, fp));
        }
    }
    out
}

/// scikit-learn's `average_precision_score` for one class; None without positives.
pub fn average_precision(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let pairs = sorted(scores, positive);
    let total_pos = positive.iter().filter(|&&p| p).count() as f64;
    if total_pos == 0.0 {
        return None;
    }
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for (tp, fp) in thresholds(&pairs) {
        let recall = tp / total_pos;
        let precision = tp / (tp + fp);
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    Some(ap)
}

/// scikit-learn's `roc_auc_score` for one class; None without positives or without negatives.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let pairs = sorted(scores, positive);
    let pos = positive.iter().filter(|&&p| p).count() as f64;
    let neg = positive.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    let (mut area, mut prev_fpr, mut prev_tpr) = (0.0, 0.0, 0.0);
    for (tp, fp) in thresholds(&pairs) {
        let (tpr, fpr) = (tp / pos, fp / neg);
        area += (fpr - prev_fpr) * (tpr + prev_tpr) / 2.0;
        prev_fpr = fpr;
        prev_tpr = tpr;
    }
    Some(area)
}

/// `sqrt(2) * Phi^-1(auc)`, the d-prime PSLA reports from the mean AUC.
pub fn d_prime(auc: f64) -> f64 {
    std::f64::consts::SQRT_2 * normal_quantile(auc)
}

/// The standard normal quantile function (P. J. Acklam's rational approximation, relative error
/// below 1.2e-9, refined by one Halley step on the normal CDF computed from `erfc`).
pub fn normal_quantile(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.383577518672690e2, -3.066479806614716e1, 2.506628277459239];
    const B: [f64; 5] = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let low = 0.02425;
    let x = if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    // One Halley step: e = Phi(x) - p.
    let e = 0.5 * erfc(-x / std::f64::consts::SQRT_2) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// The complementary error function (W. J. Cody's rational approximations as in Numerical Recipes'
/// `erfccheb`-free variant: relative error below 1e-15 for the arguments used here).
pub fn erfc(x: f64) -> f64 {
    // erfc(x) = 1 - erf(x); for |x| < 0.5 use the erf series, otherwise a continued fraction.
    let ax = x.abs();
    let r = if ax < 0.5 {
        // erf by its Taylor series: 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)).
        let (mut term, mut sum, mut n) = (ax, ax, 0.0f64);
        loop {
            n += 1.0;
            term *= -ax * ax / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // Lentz's continued fraction: erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))).
        let tiny = 1e-300;
        let mut f = ax;
        let (mut c, mut d) = (ax, 0.0f64);
        for i in 1..500 {
            let a = i as f64 / 2.0;
            d = ax + a * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = ax + a / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (-ax * ax).exp() / std::f64::consts::PI.sqrt() / f
    };
    if x >= 0.0 { r } else { 2.0 - r }
}
