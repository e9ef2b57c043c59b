#![cfg(feature = "host")]
//! Medians and spreads. The machines are shared and noisy, so every figure
//! the suite reports is a median, with the range it came from beside it.

/// Median, minimum and maximum of a sample.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for an empty sample or one holding NaN.
    pub fn of(xs: &[f64]) -> Option<Summary> {
        if xs.is_empty() || xs.iter().any(|x| x.is_nan()) {
            return None;
        }
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Summary {
            n: v.len(),
            median,
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// Least-squares line through (x, y): (intercept, slope, r²).
pub fn linear_fit(points: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let r2 = if syy == 0.0 { 1.0 } else { (sxy * sxy) / (sxx * syy) };
    Some((intercept, slope, r2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        // (sample, Some((n, median, min, max)) or None)
        type Case<'a> = (&'a [f64], Option<(usize, f64, f64, f64)>);
        let cases: &[Case] = &[
            (&[], None),
            (&[3.0], Some((1, 3.0, 3.0, 3.0))),
            (&[5.0, 1.0, 3.0], Some((3, 3.0, 1.0, 5.0))),
            (&[4.0, 1.0, 3.0, 2.0], Some((4, 2.5, 1.0, 4.0))),
            (&[2.0, 2.0, 9.0, 2.0, 1.0], Some((5, 2.0, 1.0, 9.0))),
            (&[1.0, f64::NAN], None),
        ];
        for (xs, want) in cases {
            let got = Summary::of(xs).map(|s| (s.n, s.median, s.min, s.max));
            assert_eq!(got, *want, "{xs:?}");
        }
    }

    #[test]
    fn fits() {
        let (a, b, r2) = linear_fit(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).unwrap();
        assert!((a - 1.0).abs() < 1e-12 && (b - 2.0).abs() < 1e-12 && (r2 - 1.0).abs() < 1e-12);
        let (_, b, r2) = linear_fit(&[(0.0, 0.0), (1.0, 1.0), (2.0, 0.0), (3.0, 1.0)]).unwrap();
        assert!((b - 0.2).abs() < 1e-12 && r2 < 0.5);
        assert_eq!(linear_fit(&[(1.0, 1.0)]), None);
        assert_eq!(linear_fit(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }
}
