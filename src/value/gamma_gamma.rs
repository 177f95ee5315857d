//! Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV: using
//! iso-value curves for customer base analysis", J. Marketing Research 42(4);
//! Fader & Hardie 2013, "The Gamma-Gamma model of monetary value").
//!
//! A customer's transaction values are `Gamma(p, ν)` with `ν ~ Gamma(q, γ)`
//! across customers; spend is assumed independent of the purchase process.

use std::collections::HashMap;

use super::bgnbd::edge_parameter;
use super::optim::minimise;
use super::special::ln_gamma;
use super::{FitOptions, FitReport, ValueError};

/// Fitted Gamma-Gamma parameters (all > 0). `gamma` is in currency units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

struct Row {
    x: f64,
    m: f64,
    ln_m: f64,
}

impl GammaGamma {
    /// Checks that all three parameters are finite and positive.
    pub fn validate(&self) -> Result<(), ValueError> {
        let ok = [self.p, self.q, self.gamma]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0);
        if ok {
            Ok(())
        } else {
            Err(ValueError::InvalidParameter(format!(
                "Gamma-Gamma parameters must be finite and > 0, got {self:?}"
            )))
        }
    }

    /// Maximum-likelihood fit with default [`FitOptions`] (no penalty).
    pub fn fit(freq_monetary: &[(f64, f64)]) -> Result<(GammaGamma, FitReport), ValueError> {
        Self::fit_with(freq_monetary, &FitOptions::default())
    }

    /// Maximum-likelihood fit of `(p, q, γ)` from `(x, m̄)` pairs: number of
    /// repeat purchases `x > 0` and the mean value `m̄ > 0` of those repeat
    /// purchases. Customers without repeat purchases carry no spend
    /// information and must be left out by the caller (an `x <= 0` is an
    /// error, not silently skipped).
    ///
    /// Minimises the mean negative log-likelihood per customer plus
    /// `penalizer · (p² + q² + γ²)` by Nelder-Mead over log-parameters,
    /// starting at `p = 1, q = 2, γ = mean(m̄)` (prior mean spend = mean(m̄)).
    pub fn fit_with(
        freq_monetary: &[(f64, f64)],
        opts: &FitOptions,
    ) -> Result<(GammaGamma, FitReport), ValueError> {
        if freq_monetary.is_empty() {
            return Err(ValueError::EmptyInput);
        }
        if !(opts.penalizer.is_finite() && opts.penalizer >= 0.0) {
            return Err(ValueError::InvalidParameter(format!(
                "penalizer must be finite and >= 0, got {}",
                opts.penalizer
            )));
        }
        let mut xs: Vec<f64> = Vec::new();
        let mut x_index: HashMap<u64, usize> = HashMap::new();
        let mut x_weight: Vec<f64> = Vec::new();
        let mut rows = Vec::with_capacity(freq_monetary.len());
        for (index, &(x, m)) in freq_monetary.iter().enumerate() {
            if !(x.is_finite() && m.is_finite()) || x <= 0.0 || m <= 0.0 {
                return Err(ValueError::InvalidInput {
                    index,
                    reason: format!(
                        "Gamma-Gamma needs finite frequency > 0 and monetary value > 0, got ({x}, {m})"
                    ),
                });
            }
            let xi = *x_index.entry(x.to_bits()).or_insert_with(|| {
                xs.push(x);
                x_weight.push(0.0);
                xs.len() - 1
            });
            x_weight[xi] += 1.0;
            rows.push(Row { x, m, ln_m: m.ln() });
        }
        let n = rows.len() as f64;
        let mean_m = rows.iter().map(|r| r.m).sum::<f64>() / n;
        let ln_xs: Vec<f64> = xs.iter().map(|x| x.ln()).collect();
        // Sum of the per-customer log-likelihoods, x-only terms once per distinct x.
        let ll = |g: &GammaGamma| -> f64 {
            let GammaGamma { p, q, gamma } = *g;
            let mut total = 0.0;
            let common = -ln_gamma(q) + q * gamma.ln();
            for i in 0..xs.len() {
                let px = p * xs[i];
                total += x_weight[i] * (common + ln_gamma(px + q) - ln_gamma(px) + px * ln_xs[i]);
            }
            for row in &rows {
                let px = p * row.x;
                total += (px - 1.0) * row.ln_m - (px + q) * (gamma + row.x * row.m).ln();
            }
            total
        };
        let penalizer = opts.penalizer;
        let cost = |theta: &[f64]| -> f64 {
            if theta.iter().any(|v| v.abs() > 50.0) {
                return f64::INFINITY;
            }
            let g = from_log(theta);
            -ll(&g) / n + penalizer * (g.p * g.p + g.q * g.q + g.gamma * g.gamma)
        };
        let x0 = vec![0.0, 2f64.ln(), mean_m.ln()];
        let out = minimise(cost, x0, opts.max_iters)?;
        let model = from_log(&out.x);
        let log_likelihood = ll(&model);
        let mut converged = out.converged && log_likelihood.is_finite();
        let mut termination = out.termination;
        if let Some((name, v)) = edge_parameter(&out.x, &["p", "q", "gamma"]) {
            converged = false;
            termination = format!(
                "not converged: {name} = {v:e} drifted towards 0 or infinity, so the likelihood \
                 has no interior maximum for this data (optimiser: {termination})"
            );
        }
        Ok((
            model,
            FitReport {
                log_likelihood,
                iterations: out.iterations,
                converged,
                termination,
            },
        ))
    }

    /// Log-likelihood of one customer with `x` repeat purchases of mean value `m̄`:
    ///
    /// `ln L = ln Γ(px+q) − ln Γ(px) − ln Γ(q) + q ln γ + (px−1) ln m̄ + px ln x − (px+q) ln(γ + x m̄)`
    ///
    /// (the density of the mean of `x` Gamma(p, ν) spends, integrated over
    /// `ν ~ Gamma(q, γ)`; the form of the `lifetimes` GammaGammaFitter).
    /// NaN for invalid input.
    pub fn customer_log_likelihood(&self, x: f64, m: f64) -> f64 {
        if self.validate().is_err() || !(x.is_finite() && m.is_finite() && x > 0.0 && m > 0.0) {
            return f64::NAN;
        }
        let GammaGamma { p, q, gamma } = *self;
        let px = p * x;
        ln_gamma(px + q) - ln_gamma(px) - ln_gamma(q)
            + q * gamma.ln()
            + (px - 1.0) * m.ln()
            + px * x.ln()
            - (px + q) * (gamma + x * m).ln()
    }

    /// Sum of [`customer_log_likelihood`](Self::customer_log_likelihood).
    pub fn log_likelihood(&self, freq_monetary: &[(f64, f64)]) -> f64 {
        freq_monetary
            .iter()
            .map(|&(x, m)| self.customer_log_likelihood(x, m))
            .sum()
    }

    /// Conditional expected average spend per transaction,
    /// `E[M | x, m̄] = p (γ + x m̄) / (p x + q − 1)` (Fader, Hardie & Lee 2005b, eq. 5).
    ///
    /// `x = 0` gives the population mean `p γ / (q − 1)` (`m` is ignored).
    /// Returns `+inf` when `p x + q <= 1` (the posterior mean does not exist,
    /// possible only for `x = 0` with `q <= 1` or tiny `p x`), NaN for
    /// negative or non-finite input or invalid parameters.
    pub fn expected_spend(&self, x: f64, m: f64) -> f64 {
        if self.validate().is_err() || !(x.is_finite() && x >= 0.0) {
            return f64::NAN;
        }
        let m = if x == 0.0 { 0.0 } else { m };
        if !(m.is_finite() && m >= 0.0) {
            return f64::NAN;
        }
        let GammaGamma { p, q, gamma } = *self;
        let denom = p * x + q - 1.0;
        if denom <= 0.0 {
            return f64::INFINITY;
        }
        p * (gamma + x * m) / denom
    }
}

fn from_log(theta: &[f64]) -> GammaGamma {
    GammaGamma {
        p: theta[0].exp(),
        q: theta[1].exp(),
        gamma: theta[2].exp(),
    }
}
