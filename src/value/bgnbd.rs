//! BG/NBD model (Fader, Hardie & Lee 2005, "Counting your customers the easy
//! way: an alternative to the Pareto/NBD model", Marketing Science 24(2)).
//!
//! While alive a customer buys as a Poisson process with rate `λ ~ Gamma(r, α)`;
//! after each purchase she drops out with probability `p ~ Beta(a, b)`.

use std::collections::HashMap;

use super::optim::minimise;
use super::special::{beta_expectation, ln_gamma, log_add_exp, ratio_series};
use super::{FitOptions, FitReport, Summary, ValueError};

/// Fitted BG/NBD parameters (all > 0). `alpha` is in the caller's time unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

/// Customers with identical `(x, t_x, T)` share one likelihood term, so they
/// are grouped once before the optimisation (a daily-granularity summary of
/// millions of customers has far fewer distinct triples).
struct Row {
    /// Index into `Prepared::xs`.
    xi: usize,
    x: f64,
    tx: f64,
    t: f64,
    weight: f64,
}

struct Prepared {
    /// Distinct frequencies and how many customers have each.
    xs: Vec<f64>,
    x_weight: Vec<f64>,
    rows: Vec<Row>,
    n: f64,
}

impl Prepared {
    fn new(data: &[Summary]) -> Self {
        let mut x_index: HashMap<u64, usize> = HashMap::new();
        let mut xs = Vec::new();
        let mut x_weight = Vec::new();
        let mut row_index: HashMap<(u64, u64, u64), usize> = HashMap::new();
        let mut rows: Vec<Row> = Vec::new();
        for s in data {
            let x = s.frequency;
            // t_x does not enter the likelihood when x = 0; normalising it
            // lets all one-time buyers with the same T share a row.
            let tx = if x == 0.0 { 0.0 } else { s.recency };
            let xi = *x_index.entry(x.to_bits()).or_insert_with(|| {
                xs.push(x);
                x_weight.push(0.0);
                xs.len() - 1
            });
            x_weight[xi] += 1.0;
            let key = (x.to_bits(), tx.to_bits(), s.t.to_bits());
            let ri = *row_index.entry(key).or_insert_with(|| {
                rows.push(Row {
                    xi,
                    x,
                    tx,
                    t: s.t,
                    weight: 0.0,
                });
                rows.len() - 1
            });
            rows[ri].weight += 1.0;
        }
        Prepared {
            xs,
            x_weight,
            rows,
            n: data.len() as f64,
        }
    }

    /// Sum of the per-customer log-likelihoods (see [`BgNbd::customer_log_likelihood`]),
    /// with the terms that depend on `x` only computed once per distinct `x`.
    fn log_likelihood(&self, m: &BgNbd, scratch: &mut Vec<f64>) -> f64 {
        let BgNbd { r, alpha, a, b } = *m;
        let ln_alpha = alpha.ln();
        let common = ln_gamma(a + b) - ln_gamma(b) - ln_gamma(r) + r * ln_alpha;
        let ln_a = a.ln();
        scratch.clear();
        let mut total = 0.0;
        for (&x, &w) in self.xs.iter().zip(&self.x_weight) {
            // A1 + A2 for this x.
            let a12 = common + ln_gamma(r + x) + ln_gamma(b + x) - ln_gamma(a + b + x);
            total += w * a12;
            // ln(a / (b + x − 1)), used by A4 (x > 0 only).
            let d = if x > 0.0 {
                ln_a - (b + x - 1.0).ln()
            } else {
                0.0
            };
            scratch.push(d);
        }
        for row in &self.rows {
            let rx = r + row.x;
            let a3 = -rx * (alpha + row.t).ln();
            let ll = if row.x > 0.0 {
                let a4 = scratch[row.xi] - rx * (alpha + row.tx).ln();
                log_add_exp(a3, a4)
            } else {
                a3
            };
            total += row.weight * ll;
        }
        total
    }
}

impl BgNbd {
    /// Checks that all four parameters are finite and positive.
    pub fn validate(&self) -> Result<(), ValueError> {
        let ok = [self.r, self.alpha, self.a, self.b]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0);
        if ok {
            Ok(())
        } else {
            Err(ValueError::InvalidParameter(format!(
                "BG/NBD parameters must be finite and > 0, got {self:?}"
            )))
        }
    }

    /// Maximum-likelihood fit with default [`FitOptions`] (no penalty).
    pub fn fit(data: &[Summary]) -> Result<(BgNbd, FitReport), ValueError> {
        Self::fit_with(data, &FitOptions::default())
    }

    /// Maximum-likelihood fit of `(r, α, a, b)`.
    ///
    /// Minimises the mean negative log-likelihood per customer plus
    /// `penalizer · (r² + α² + a² + b²)` with Nelder-Mead over the
    /// log-parameters, which keeps every parameter positive without
    /// constraints. The start is `r = a = b = 1`, `α = ΣT / Σx` (so the prior
    /// mean purchase rate matches the observed one whatever the time unit).
    ///
    /// Errors: empty input, a summary failing [`Summary::validate`], no
    /// customer with a repeat purchase (then `a`, `b` are not identifiable),
    /// an invalid penalizer. Non-convergence is not an error: check
    /// [`FitReport::converged`].
    pub fn fit_with(data: &[Summary], opts: &FitOptions) -> Result<(BgNbd, FitReport), ValueError> {
        if data.is_empty() {
            return Err(ValueError::EmptyInput);
        }
        for (index, s) in data.iter().enumerate() {
            s.validate()
                .map_err(|reason| ValueError::InvalidInput { index, reason })?;
        }
        if !(opts.penalizer.is_finite() && opts.penalizer >= 0.0) {
            return Err(ValueError::InvalidParameter(format!(
                "penalizer must be finite and >= 0, got {}",
                opts.penalizer
            )));
        }
        let sum_x: f64 = data.iter().map(|s| s.frequency).sum();
        if sum_x == 0.0 {
            return Err(ValueError::NoRepeatPurchases);
        }
        let sum_t: f64 = data.iter().map(|s| s.t).sum();
        let prep = Prepared::new(data);
        let alpha0 = if sum_t > 0.0 { sum_t / sum_x } else { 1.0 };
        let x0 = vec![0.0, alpha0.ln(), 0.0, 0.0];
        let penalizer = opts.penalizer;
        let scratch = std::cell::RefCell::new(Vec::with_capacity(prep.xs.len()));
        let cost = |theta: &[f64]| -> f64 {
            // Far outside any sensible range exp() would overflow or lnΓ lose
            // all precision; treat it as infeasible.
            if theta.iter().any(|v| v.abs() > 50.0) {
                return f64::INFINITY;
            }
            let m = from_log(theta);
            let ll = prep.log_likelihood(&m, &mut scratch.borrow_mut());
            let pen = penalizer * (m.r * m.r + m.alpha * m.alpha + m.a * m.a + m.b * m.b);
            -ll / prep.n + pen
        };
        let out = minimise(cost, x0, opts.max_iters)?;
        let model = from_log(&out.x);
        let ll = prep.log_likelihood(&model, &mut scratch.borrow_mut());
        let mut converged = out.converged && ll.is_finite();
        let mut termination = out.termination;
        if let Some((name, v)) = edge_parameter(&out.x, &["r", "alpha", "a", "b"]) {
            converged = false;
            termination = format!(
                "not converged: {name} = {v:e} drifted towards 0 or infinity, so the likelihood \
                 has no interior maximum for this data (optimiser: {termination})"
            );
        }
        Ok((
            model,
            FitReport {
                log_likelihood: ll,
                iterations: out.iterations,
                converged,
                termination,
            },
        ))
    }

    /// Log-likelihood of one customer (Fader, Hardie & Lee 2005, eq. 6):
    ///
    /// `ln L = ln Γ(r+x) − ln Γ(r) + r ln α + ln B(a, b+x) − ln B(a, b) − (r+x) ln(α+T)
    ///        + ln[1 + δ(x>0) · a/(b+x−1) · ((α+T)/(α+t_x))^{r+x}]`
    ///
    /// evaluated as `A1 + A2 + ln(e^{A3} + δ(x>0) e^{A4})`, because
    /// `(α+T)^{−(r+x)}` under- and `((α+T)/(α+t_x))^{r+x}` overflows for
    /// frequent buyers with long gaps, while their logarithms are moderate.
    /// NaN if the summary or the parameters are invalid.
    pub fn customer_log_likelihood(&self, s: &Summary) -> f64 {
        if s.validate().is_err() || self.validate().is_err() {
            return f64::NAN;
        }
        let BgNbd { r, alpha, a, b } = *self;
        let x = s.frequency;
        let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
        let a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
        let a3 = -(r + x) * (alpha + s.t).ln();
        if x > 0.0 {
            let a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + s.recency).ln();
            a1 + a2 + log_add_exp(a3, a4)
        } else {
            a1 + a2 + a3
        }
    }

    /// Sum of [`customer_log_likelihood`](Self::customer_log_likelihood) over `data`.
    pub fn log_likelihood(&self, data: &[Summary]) -> f64 {
        data.iter().map(|s| self.customer_log_likelihood(s)).sum()
    }

    /// `P(alive | x, t_x, T)` (Fader, Hardie & Lee 2005, eq. 11):
    /// `1 / [1 + δ(x>0) · a/(b+x−1) · ((α+T)/(α+t_x))^{r+x}]`; 1 for `x = 0`
    /// (under the BG/NBD a customer can only drop out right after a purchase).
    /// Computed from the log-odds so that large powers cannot overflow.
    /// NaN if the summary or the parameters are invalid.
    pub fn p_alive(&self, s: &Summary) -> f64 {
        if s.validate().is_err() || self.validate().is_err() {
            return f64::NAN;
        }
        if s.frequency == 0.0 {
            return 1.0;
        }
        let lo = self.log_odds_dead(s);
        // 1 / (1 + e^lo) without overflow for either sign of lo.
        if lo > 0.0 {
            let e = (-lo).exp();
            e / (1.0 + e)
        } else {
            1.0 / (1.0 + lo.exp())
        }
    }

    /// `ln[a/(b+x−1) · ((α+T)/(α+t_x))^{r+x}]` for `x > 0`.
    fn log_odds_dead(&self, s: &Summary) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let x = s.frequency;
        a.ln() - (b + x - 1.0).ln() + (r + x) * ((alpha + s.t).ln() - (alpha + s.recency).ln())
    }

    /// Expected number of purchases in `(T, T + t]` for a customer with summary
    /// `s` (Fader, Hardie & Lee 2005, eq. 10):
    ///
    /// `E[Y(t) | x, t_x, T] = (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+t))^{r+x} ·
    ///  ₂F₁(r+x, b+x; a+b+x−1; t/(α+T+t))] · P(alive | x, t_x, T)`.
    ///
    /// For a new customer (`x = t_x = T = 0`) this is the unconditional
    /// `E[X(t)]` of eq. 9.
    ///
    /// **Valid for every `a > 0`**, not only `a > 1`: the formula is
    /// `P(alive) · E_p[(1 − (1 + p·t/(α+T))^{−(r+x)}) / p]` with
    /// `p ~ Beta(a, b+x)`, an integral that is finite for all `a > 0`; the
    /// closed form splits it into two pieces that are separately infinite
    /// for `a <= 1` and is its analytic continuation there (the published
    /// CDNOW fit has `a = 0.793`). To avoid the `0/0` at `a = 1` we apply
    /// Euler's transformation and cancel the factor `a − 1` analytically:
    /// with `z = t/(α+T+t)`, `L = ln(1−z)`, `ε = a−1`, `c = a+b+x−1`,
    ///
    /// `E[Y | alive] = c · (1 − e^{εL})/ε − e^{εL} · Σ_{n≥1} (a+b−1−r)_n (a)_{n−1} / ((c+1)_{n−1} n!) zⁿ`,
    ///
    /// whose terms decay like `n^{a−r−x−2} zⁿ` (the raw ₂F₁ series' grow
    /// like `n^{r+x−a}` first). If that series needs more than
    /// [`MAX_SERIES_TERMS`](super::special::MAX_SERIES_TERMS) terms (`z`
    /// extremely close to 1, i.e. `t` thousands of times `α+T`), the integral
    /// is evaluated by tanh-sinh quadrature instead.
    ///
    /// Returns 0 for `t = 0`; NaN for `t < 0`, non-finite `t`, an invalid
    /// summary or invalid parameters.
    pub fn expected_purchases(&self, t: f64, s: &Summary) -> f64 {
        if !(t.is_finite() && t >= 0.0) || s.validate().is_err() || self.validate().is_err() {
            return f64::NAN;
        }
        if t == 0.0 {
            return 0.0;
        }
        let alive = match self.expected_if_alive_series(t, s) {
            Ok(v) => v,
            Err(_) => self.expected_if_alive_quadrature(t, s).0,
        };
        // Mathematically > 0; the clamp only absorbs rounding for tiny t.
        (alive * self.p_alive(s)).max(0.0)
    }

    /// `E[Y(t) | alive at T]` by the transformed series (see [`expected_purchases`](Self::expected_purchases)).
    pub(crate) fn expected_if_alive_series(
        &self,
        t: f64,
        s: &Summary,
    ) -> Result<f64, super::special::SeriesError> {
        let BgNbd { r, alpha, a, b } = *self;
        let x = s.frequency;
        let u = t / (alpha + s.t);
        let l = -u.ln_1p(); // ln(1 − z)
        let z = u / (1.0 + u);
        let eps = a - 1.0;
        let c = a + b + x - 1.0;
        let ca = a + b - 1.0 - r;
        // (1 − e^{εL})/ε → −L as ε → 0.
        let e1 = if eps == 0.0 {
            -l
        } else {
            -(eps * l).exp_m1() / eps
        };
        // u_1 = (a+b−1−r)·z; u_{m+1}/u_m = (ca+m)(a+m−1)/((c+m)(m+1))·z, m = n+1.
        let settle = (-ca - 1.0).max(0.0).ceil();
        let t1 = ratio_series(ca * z, z, settle, |n| {
            (ca + n + 1.0) * (a + n) / ((c + n + 1.0) * (n + 2.0)) * z
        })?;
        Ok(c * e1 - (eps * l).exp() * t1)
    }

    /// `E[Y(t) | alive at T] = E[(1 − (1 + p·t/(α+T))^{−(r+x)}) / p]`, `p ~ Beta(a, b+x)`,
    /// by quadrature. Returns the value and whether the quadrature converged.
    pub(crate) fn expected_if_alive_quadrature(&self, t: f64, s: &Summary) -> (f64, bool) {
        let BgNbd { r, alpha, a, b } = *self;
        let x = s.frequency;
        let u = t / (alpha + s.t);
        let k = r + x;
        beta_expectation(a, b + x, |p, _q| {
            let pu = p * u;
            if pu < 1e-300 {
                k * u // limit p → 0
            } else {
                -(-k * pu.ln_1p()).exp_m1() / p
            }
        })
    }
}

fn from_log(theta: &[f64]) -> BgNbd {
    BgNbd {
        r: theta[0].exp(),
        alpha: theta[1].exp(),
        a: theta[2].exp(),
        b: theta[3].exp(),
    }
}

/// A log-parameter beyond ±18 (value < 1.5e-8 or > 6.6e7) means the optimiser
/// is running off to a boundary rather than sitting at an interior maximum.
pub(crate) fn edge_parameter(theta: &[f64], names: &[&'static str]) -> Option<(&'static str, f64)> {
    theta
        .iter()
        .zip(names)
        .find(|(v, _)| v.abs() > 18.0)
        .map(|(v, n)| (*n, v.exp()))
}
