//! Small random distributions the generator needs beyond what `rand` offers
//! (rand_distr is not a dependency): normal, gamma, Poisson, weighted choice.
//!
//! Every function takes its parameters as given and never panics: degenerate
//! parameters (zero, negative, NaN) collapse to the obvious degenerate draw.

use rand::Rng;

/// Standard normal draw (Box-Muller; one value per call keeps the stream simple).
pub(crate) fn normal<R: Rng>(rng: &mut R) -> f64 {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Log-normal multiplier with median 1.
pub(crate) fn lognormal<R: Rng>(rng: &mut R, sigma: f64) -> f64 {
    (sigma * normal(rng)).exp()
}

/// Gamma draw with the given shape and mean (Marsaglia & Tsang 2000).
pub(crate) fn gamma<R: Rng>(rng: &mut R, shape: f64, mean: f64) -> f64 {
    if shape.is_nan() || shape <= 0.0 || mean.is_nan() || mean <= 0.0 || mean.is_infinite() {
        return 0.0;
    }
    let scale = mean / shape;
    if shape < 1.0 {
        // Boost: Gamma(a) = Gamma(a + 1) * U^(1/a).
        let u: f64 = 1.0 - rng.random::<f64>();
        return gamma(rng, shape + 1.0, (shape + 1.0) * scale) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u: f64 = 1.0 - rng.random::<f64>();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v * scale;
        }
    }
}

/// Poisson draw; exact for small means, normal approximation above 30.
pub(crate) fn poisson<R: Rng>(rng: &mut R, mean: f64) -> u64 {
    if mean.is_nan() || mean <= 0.0 {
        return 0;
    }
    if mean < 30.0 {
        let limit = (-mean).exp();
        let mut k = 0u64;
        let mut p = rng.random::<f64>();
        while p > limit {
            k += 1;
            p *= rng.random::<f64>();
        }
        return k;
    }
    let x = mean + mean.sqrt() * normal(rng) + 0.5;
    // `as` saturates, so an absurd mean cannot wrap around.
    if x <= 0.0 {
        0
    } else {
        x as u64
    }
}

/// Index drawn with probability proportional to `weights`; 0 if all are zero.
pub(crate) fn weighted<R: Rng>(rng: &mut R, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().filter(|w| **w > 0.0).sum();
    if total.is_nan() || total <= 0.0 {
        return 0;
    }
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if *w > 0.0 {
            if x < *w {
                return i;
            }
            x -= *w;
        }
    }
    weights.len().saturating_sub(1)
}

/// A uniformly chosen element; the slices passed in are static and never empty.
pub(crate) fn pick<T: Copy, R: Rng>(rng: &mut R, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// Probability clamped into [0, 1] so that `random_bool` never panics.
pub(crate) fn chance<R: Rng>(rng: &mut R, p: f64) -> bool {
    if p.is_nan() {
        return false;
    }
    rng.random_bool(p.clamp(0.0, 1.0))
}
