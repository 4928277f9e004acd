//! Random numbers, key choice and key bytes for the bench's workers.
//!
//! Each worker owns a [`Rng`] seeded from the run's seed and its thread number, so a run
//! is reproducible from the seed it prints. Cost per key: a few multiplications (uniform)
//! or one `powf` (zipfian), and 16 bytes formatted on the stack: no allocation, no lock.

/// wyrand: one 64-bit state, one 128-bit multiply per number; plenty for choosing keys.
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Self {
        // SplitMix64 of (seed, stream) so that nearby seeds give unrelated streams.
        let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng { state: z ^ (z >> 31) }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xA076_1D64_78BD_642F);
        let t = (self.state as u128).wrapping_mul((self.state ^ 0xE703_7ED1_A0B4_28DB) as u128);
        ((t >> 64) ^ t) as u64
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for our `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// How keys are chosen for reads, updates and deletes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyDistribution {
    Uniform,
    /// YCSB's zipfian: rank 0 is the most popular key; `theta` in (0, 1).
    Zipfian {
        theta: f64,
    },
}

impl std::fmt::Display for KeyDistribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyDistribution::Uniform => write!(f, "uniform"),
            KeyDistribution::Zipfian { theta } => write!(f, "zipfian:{theta}"),
        }
    }
}

/// Terms of the zeta sum computed exactly; the tail beyond is integrated, which is within
/// 1e-9 relative for theta in (0, 1) and keeps setup O(1 M) even for billions of keys.
const ZETA_EXACT_TERMS: u64 = 1 << 20;

/// Gray et al.'s zipfian generator ("Quickly generating billion-record synthetic
/// databases", SIGMOD 1994), as YCSB uses it, over a fixed item count.
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl Zipfian {
    pub fn new(items: u64, theta: f64) -> Self {
        assert!(items >= 1 && theta > 0.0 && theta < 1.0, "zipfian needs items >= 1 and theta in (0, 1)");
        let zeta_2 = zeta(2.min(items), theta);
        let zeta_n = zeta(items, theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n);
        Zipfian { items, theta, alpha, zeta_n, eta }
    }

    /// A rank in `0..items`, rank 0 the most frequent.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let rank = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items - 1)
    }
}

fn zeta(n: u64, theta: f64) -> f64 {
    let exact = n.min(ZETA_EXACT_TERMS);
    let mut sum: f64 = (1..=exact).map(|i| (i as f64).powf(-theta)).sum();
    if n > exact {
        // Sum over (exact, n] of i^-theta ~ integral of x^-theta over [exact+0.5, n+0.5].
        let antiderivative = |x: f64| x.powf(1.0 - theta) / (1.0 - theta);
        sum += antiderivative(n as f64 + 0.5) - antiderivative(exact as f64 + 0.5);
    }
    sum
}

/// Picks key ids for operations on existing records.
pub struct KeyChooser {
    distribution: KeyDistribution,
    zipfian: Option<Zipfian>,
}

impl KeyChooser {
    /// `items`: the key space loaded before the phase starts (ids `0..items`).
    pub fn new(distribution: KeyDistribution, items: u64) -> Self {
        let zipfian = match distribution {
            KeyDistribution::Zipfian { theta } if items > 0 => Some(Zipfian::new(items, theta)),
            _ => None,
        };
        KeyChooser { distribution, zipfian }
    }

    /// An id in `0..items_now`. Inserted keys (ids at or past the initial key space) are
    /// chosen uniformly; zipfian ranks stay over the initial key space, as in YCSB.
    pub fn choose(&self, rng: &mut Rng, items_now: u64) -> u64 {
        match (&self.distribution, &self.zipfian) {
            (KeyDistribution::Zipfian { .. }, Some(zipfian)) => zipfian.sample(rng),
            _ => rng.below(items_now.max(1)),
        }
    }
}

/// Length of every bench key: "user" and 12 decimal digits, like YCSB's keys.
pub const KEY_LEN: usize = 16;
/// Largest id a key can spell (12 digits).
pub const KEY_ID_MAX: u64 = 999_999_999_999;

/// The key bytes of record `id`.
pub fn key_of(id: u64) -> [u8; KEY_LEN] {
    debug_assert!(id <= KEY_ID_MAX);
    let mut key = *b"user000000000000";
    let mut rest = id;
    for slot in key[4..].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_width_decimal() {
        assert_eq!(&key_of(0), b"user000000000000");
        assert_eq!(&key_of(1234), b"user000000001234");
        assert_eq!(&key_of(KEY_ID_MAX), b"user999999999999");
    }

    #[test]
    fn uniform_choice_stays_in_range() {
        let mut rng = Rng::new(7, 0);
        assert!((0..10_000).all(|_| rng.below(13) < 13));
    }

    #[test]
    fn zipfian_favours_low_ranks_and_stays_in_range() {
        let mut rng = Rng::new(1, 2);
        let zipfian = Zipfian::new(1000, 0.99);
        let samples: Vec<u64> = (0..100_000).map(|_| zipfian.sample(&mut rng)).collect();
        assert!(samples.iter().all(|&r| r < 1000));
        let rank0 = samples.iter().filter(|&&r| r == 0).count();
        let rank500 = samples.iter().filter(|&&r| r == 500).count();
        // With theta 0.99 over 1000 items, rank 0 draws about 13% of samples.
        assert!(rank0 > 10_000 && rank0 < 16_000, "rank 0 drew {rank0}");
        assert!(rank500 < 200, "rank 500 drew {rank500}");
    }

    #[test]
    fn integrated_zeta_tail_matches_the_exact_sum() {
        let n = ZETA_EXACT_TERMS * 3;
        let exact: f64 = (1..=n).map(|i| (i as f64).powf(-0.99)).sum();
        let approx = zeta(n, 0.99);
        assert!((exact - approx).abs() / exact < 1e-9, "exact {exact}, approx {approx}");
    }
}
