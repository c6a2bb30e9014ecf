//! Order statistics of small sample sets: median, nearest-rank percentiles, and a per-set summary.
//! NaN samples are never produced by the measurements; they are dropped here rather than poisoning a sort.

use serde::Serialize;

fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The median; the mean of the two middle values for an even count. `None` for no samples.
pub fn median(samples: &[f64]) -> Option<f64> {
    let v = sorted(samples);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The nearest-rank percentile (`p` in 0..=100): the smallest sample with at least `p`% of the samples at
/// or below it. p100 is the maximum; with 100 samples p99 is the second largest.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    let v = sorted(samples);
    if v.is_empty() {
        return None;
    }
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.saturating_sub(1).min(v.len() - 1)])
}

/// Median and range of one arm's samples, with the samples themselves in measurement order.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let v = sorted(samples);
        Some(Summary { median: median(&v)?, min: *v.first()?, max: *v.last()?, samples: samples.to_vec() })
    }

    /// (max - min) / median: how far apart this arm's own samples are.
    pub fn spread(&self) -> f64 {
        if self.median == 0.0 { f64::NAN } else { (self.max - self.min) / self.median }
    }
}

/// p50, p99 and max of a latency set (milliseconds), with the count.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(samples: &[f64]) -> Option<Latency> {
        Some(Latency {
            count: samples.len(),
            p50: percentile(samples, 50.0)?,
            p99: percentile(samples, 99.0)?,
            max: percentile(samples, 100.0)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_count_is_the_middle_value() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn median_of_even_count_is_the_mean_of_the_middle_pair() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn median_of_nothing_is_none() {
        assert_eq!(median(&[]), None);
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn nearest_rank_percentiles_of_one_to_hundred() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
    }

    #[test]
    fn p99_of_few_samples_is_the_maximum() {
        assert_eq!(percentile(&[5.0, 1.0, 9.0], 99.0), Some(9.0));
        assert_eq!(percentile(&[5.0, 1.0, 9.0], 50.0), Some(5.0));
    }

    #[test]
    fn nan_samples_are_ignored() {
        assert_eq!(median(&[f64::NAN, 1.0, 3.0]), Some(2.0));
    }

    #[test]
    fn summary_keeps_measurement_order_and_range() {
        let s = Summary::of(&[2.0, 4.0, 3.0]).unwrap_or_else(|| unreachable!());
        assert_eq!(s.samples, vec![2.0, 4.0, 3.0]);
        assert_eq!((s.min, s.median, s.max), (2.0, 3.0, 4.0));
        assert!((s.spread() - 2.0 / 3.0).abs() < 1e-12);
    }
}
