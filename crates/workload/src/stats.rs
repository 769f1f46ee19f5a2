//! Latency statistics: samples in milliseconds, summarised by percentile.

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentile (`q` in 0..=1) of unsorted samples; 0 for none.
pub fn percentile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

pub fn summarize(samples: &mut [f64]) -> Summary {
    Summary {
        count: samples.len(),
        p50_ms: percentile(samples, 0.50),
        p99_ms: percentile(samples, 0.99),
        max_ms: samples.iter().copied().fold(0.0, f64::max),
    }
}

/// CPU time (user + system) this process has used, seconds (Linux; 0 elsewhere).
pub fn process_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat").ok().and_then(|stat| crate::setup::parse_stat_cpu_seconds(&stat)).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut samples, 0.5), 50.0);
        assert_eq!(percentile(&mut samples, 0.99), 99.0);
        assert_eq!(percentile(&mut samples, 1.0), 100.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
        let summary = summarize(&mut [3.0, 1.0, 2.0]);
        assert_eq!((summary.count, summary.p50_ms, summary.max_ms), (3, 2.0, 3.0));
    }
}
