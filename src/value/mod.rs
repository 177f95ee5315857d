//! Customer-lifetime-value models: BG/NBD purchase counts, Gamma-Gamma spend
//! and a discounted CLV helper.
//!
//! * [`BgNbd`] — beta-geometric/NBD model of repeat purchasing (Fader, Hardie &
//!   Lee 2005, "Counting your customers the easy way"): maximum-likelihood fit,
//!   `P(alive)` and the conditional expected number of purchases.
//! * [`GammaGamma`] — spend model (Fader, Hardie & Lee 2005, "RFM and CLV:
//!   using iso-value curves"): fit and conditional expected average spend.
//! * [`clv`] — discounted value over a horizon of discrete periods.
//! * [`summarise`] — turns a transaction log into the per-customer
//!   `(frequency, recency, T, monetary)` summary the models take.
//!
//! The module is self-contained (dependencies: `argmin`, `argmin-math`, `libm`,
//! `thiserror`). Time is in whatever unit the caller uses for `recency`/`T`;
//! the fitted `alpha` and every prediction horizon are then in that unit.

mod bgnbd;
mod clv;
mod gamma_gamma;
mod optim;
pub mod special;
mod summary;
#[cfg(test)]
mod tests;

pub use bgnbd::BgNbd;
pub use clv::{clv, ClvOptions};
pub use gamma_gamma::GammaGamma;
pub use summary::{summarise, CustomerSummary};

/// Recency/frequency summary of one customer over a calibration period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// `x`: number of repeat purchase periods (distinct purchase days after
    /// the first one; the first purchase is not counted). A non-negative integer.
    pub frequency: f64,
    /// `t_x`: time from the first purchase to the last one (0 when `x = 0`).
    pub recency: f64,
    /// `T`: time from the first purchase to the end of the calibration period.
    pub t: f64,
}

impl Summary {
    pub fn new(frequency: f64, recency: f64, t: f64) -> Self {
        Summary {
            frequency,
            recency,
            t,
        }
    }

    /// Checks what the BG/NBD model assumes: all fields finite, `x` a
    /// non-negative integer, `0 <= t_x <= T` (with a relative slack of 1e-9 for
    /// rounding in upstream arithmetic).
    pub fn validate(&self) -> Result<(), String> {
        let Summary {
            frequency: x,
            recency: tx,
            t,
        } = *self;
        if !(x.is_finite() && tx.is_finite() && t.is_finite()) {
            return Err(format!(
                "non-finite value (frequency {x}, recency {tx}, T {t})"
            ));
        }
        if x < 0.0 || x.fract() != 0.0 {
            return Err(format!("frequency {x} is not a non-negative integer"));
        }
        if tx < 0.0 || t < 0.0 {
            return Err(format!("negative time (recency {tx}, T {t})"));
        }
        if tx > t + 1e-9 * t.max(1.0) {
            return Err(format!("recency {tx} exceeds T {t}"));
        }
        Ok(())
    }
}

/// Outcome of a maximum-likelihood fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitReport {
    /// Log-likelihood of the data at the returned parameters, summed over
    /// customers (without the penalty term, if a penalizer was used).
    pub log_likelihood: f64,
    /// Nelder-Mead iterations over all restarts.
    pub iterations: u64,
    /// Whether the last Nelder-Mead run met its tolerance and the restart
    /// from the optimum did not find a materially better point.
    pub converged: bool,
    /// Human-readable reason the optimiser stopped.
    pub termination: String,
}

/// Options for the maximum-likelihood fits.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// L2 penalty `λ · Σ θ²` on the (untransformed) parameters, added to the
    /// mean negative log-likelihood per customer — the form of the Python
    /// `lifetimes` package's `penalizer_coef` (which, however, penalises the
    /// BG/NBD `α` on an internally rescaled time axis, so equal coefficients
    /// do not give identical fits). Default 0.
    pub penalizer: f64,
    /// Iteration cap of each Nelder-Mead run. Default 5000.
    pub max_iters: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            penalizer: 0.0,
            max_iters: 5_000,
        }
    }
}

/// Errors of the value models. Convergence problems are *not* errors: they
/// are reported in [`FitReport`].
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("no customers to fit")]
    EmptyInput,
    #[error("invalid input for customer #{index}: {reason}")]
    InvalidInput { index: usize, reason: String },
    #[error("no customer has a repeat purchase (all frequencies are 0); the BG/NBD dropout parameters are not identifiable")]
    NoRepeatPurchases,
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    #[error("optimiser failed: {0}")]
    Optimizer(String),
}
