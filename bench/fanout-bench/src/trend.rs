//! Whether a series sampled over time keeps growing: the `soak` scenario's
//! verdict on memory, open files, queued bytes and tasks.
//!
//! Two views of the same samples, both robust to a few odd ones: the
//! median of the first samples against the median of the last ones (a
//! step or a slow climb shows; one spike does not), and the least-squares
//! line through all of them, its slope times the span (a steady climb
//! shows even when the ends are noisy). A series passes when both stay
//! within its allowance.

use serde::Serialize;

/// Samples at each end of the series that the medians are taken over: a
/// fifth of them, at least 3 (fewer when the series is that short).
fn edge(n: usize) -> usize {
    (n / 5).max(3).min(n.div_ceil(2))
}

pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        f64::midpoint(v[mid - 1], v[mid])
    })
}

/// The least-squares slope of `y` over `x`; `None` with fewer than two
/// distinct `x`.
pub(crate) fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// How much a series grew, two ways.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Growth {
    /// Median of the first samples.
    pub(crate) baseline: f64,
    /// Median of the last samples.
    pub(crate) end: f64,
    /// `end - baseline`.
    pub(crate) by_median: f64,
    /// The fitted line's rise over the whole span (slope × span).
    pub(crate) by_fit: f64,
    pub(crate) samples: usize,
}

/// The growth of `(seconds, value)` samples; `None` with fewer than 4.
pub(crate) fn growth(points: &[(f64, f64)]) -> Option<Growth> {
    let n = points.len();
    if n < 4 {
        return None;
    }
    let k = edge(n);
    let first: Vec<f64> = points[..k].iter().map(|p| p.1).collect();
    let last: Vec<f64> = points[n - k..].iter().map(|p| p.1).collect();
    let (baseline, end) = (median(&first)?, median(&last)?);
    let span = points[n - 1].0 - points[0].0;
    Some(Growth {
        baseline,
        end,
        by_median: end - baseline,
        by_fit: slope(points)? * span,
        samples: n,
    })
}

/// How much a series may grow: the larger of an absolute amount and a
/// share of its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Allowance {
    pub(crate) absolute: f64,
    pub(crate) relative: f64,
}

impl Allowance {
    pub(crate) fn of(self, baseline: f64) -> f64 {
        self.absolute.max(self.relative * baseline.abs())
    }

    /// Whether `g` stayed within the allowance, by the medians and by the fit.
    pub(crate) fn holds(self, g: &Growth) -> bool {
        let allowed = self.of(g.baseline);
        g.by_median <= allowed && g.by_fit <= allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (0..60)
            .map(|i| (f64::from(i) * 10.0, f(f64::from(i))))
            .collect()
    }

    #[test]
    fn medians_and_slopes() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]), Some(2.0));
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 3.0)]), None);
        assert_eq!(edge(60), 12);
        assert_eq!(edge(4), 2);
    }

    /// A flat series with noise and one spike passes; a slow climb of 9 %
    /// fails by both measures; a step up at the end fails by the medians.
    #[test]
    fn growth_is_told_from_noise() {
        let five = Allowance {
            absolute: 0.0,
            relative: 0.05,
        };
        let mut flat = series(|i| {
            100.0
                + if (i as u64).is_multiple_of(2) {
                    1.0
                } else {
                    -1.0
                }
        });
        flat[30].1 = 200.0;
        let g = growth(&flat).unwrap();
        assert!(five.holds(&g), "{g:?}");

        let climb = growth(&series(|i| 100.0 + i * 0.15)).unwrap();
        assert!(climb.by_median > 5.0 && climb.by_fit > 5.0, "{climb:?}");
        assert!(!five.holds(&climb));

        let step = growth(&series(|i| if i < 48.0 { 100.0 } else { 110.0 })).unwrap();
        assert_eq!(step.by_median, 10.0);
        assert!(!five.holds(&step), "{step:?}");

        let shrink = growth(&series(|i| 100.0 - i)).unwrap();
        assert!(five.holds(&shrink));
        assert!(growth(&flat[..3]).is_none());
        let fds = Allowance {
            absolute: 8.0,
            relative: 0.0,
        };
        assert_eq!(fds.of(10_000.0), 8.0);
    }
}
