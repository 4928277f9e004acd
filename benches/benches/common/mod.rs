//! What every bench here shares: a short criterion run (these machines are shared and noisy,
//! so many short samples beat a few long ones, and the whole suite stays within minutes).

use criterion::Criterion;
use std::time::Duration;

pub fn criterion_config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}
