//! Special functions used by the CLV models: log-gamma, log-beta, a stable
//! `log(exp(a) + exp(b))`, a guarded Gauss hypergeometric series and a
//! tanh-sinh quadrature for expectations under a Beta distribution.
//!
//! Everything here is plain `f64` code; `ln_gamma` delegates to `libm::lgamma`
//! (a port of the FreeBSD/musl implementation, accurate to a few ulp).

use std::f64::consts::PI;

/// `ln Γ(x)` for `x > 0` (for `x <= 0` the result is `ln |Γ(x)|`, or `+inf` at poles).
#[inline]
pub fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// `ln B(a, b) = ln Γ(a) + ln Γ(b) − ln Γ(a + b)` for `a, b > 0`.
#[inline]
pub fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// `ln(e^x + e^y)` without overflow: factor out the larger exponent so the
/// remaining `exp` is of a non-positive number.
#[inline]
pub fn log_add_exp(x: f64, y: f64) -> f64 {
    let (hi, lo) = if x >= y { (x, y) } else { (y, x) };
    if hi == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// `ln(1 + e^s)` ("softplus"), stable for both signs of `s`.
#[inline]
pub fn softplus(s: f64) -> f64 {
    if s > 0.0 {
        s + (-s).exp().ln_1p()
    } else {
        s.exp().ln_1p()
    }
}

/// Why a hypergeometric series could not produce a trustworthy value.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesError {
    /// Arguments outside the supported domain (`0 <= z < 1`, `c` not a
    /// non-positive integer, all finite).
    Domain(String),
    /// The terms did not become negligible within the iteration cap
    /// (typically `z` too close to 1 for a plain power series).
    NotConverged { terms: usize },
    /// Terms of alternating sign cancelled so much that fewer than ~7
    /// significant digits would remain.
    Cancellation,
}

impl std::fmt::Display for SeriesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeriesError::Domain(m) => write!(f, "hypergeometric series: {m}"),
            SeriesError::NotConverged { terms } => {
                write!(
                    f,
                    "hypergeometric series did not converge within {terms} terms"
                )
            }
            SeriesError::Cancellation => {
                write!(f, "hypergeometric series lost precision to cancellation")
            }
        }
    }
}

/// Maximum number of terms summed by the power series in this module.
pub const MAX_SERIES_TERMS: usize = 10_000;

/// Relative tolerance of the power series (estimated tail / |sum|).
const SERIES_RTOL: f64 = 1e-15;

/// Sums `Σ_{n>=0} t_n` where `t_0 = first` and `t_{n+1} = t_n · ratio(n)`.
///
/// Stops when the geometric bound of the tail, `|t_n| · ρ / (1 − ρ)` with
/// `ρ = max(current ratio, z)`, is below `SERIES_RTOL · |sum|` — the ratio of a
/// hypergeometric series tends to `z` monotonically for large `n`, so `ρ`
/// bounds every later ratio. `settle` is the index after which all Pochhammer
/// factors have a fixed sign (before that a term can be accidentally tiny and
/// must not stop the sum).
pub(crate) fn ratio_series(
    first: f64,
    z: f64,
    settle: f64,
    ratio: impl Fn(f64) -> f64,
) -> Result<f64, SeriesError> {
    let mut term = first;
    let mut sum = first;
    let mut max_abs = first.abs();
    for n in 0..MAX_SERIES_TERMS {
        let nf = n as f64;
        let rho_n = ratio(nf);
        let next = term * rho_n;
        if next == 0.0 {
            // Terminating series (a Pochhammer factor hit zero) or underflow:
            // every later term is zero too.
            return finish(sum, max_abs);
        }
        sum += next;
        max_abs = max_abs.max(next.abs());
        term = next;
        if nf >= settle {
            let rho = ratio(nf + 1.0).abs().max(z);
            if rho < 1.0 && term.abs() * rho / (1.0 - rho) <= SERIES_RTOL * sum.abs() {
                return finish(sum, max_abs);
            }
        }
        if !sum.is_finite() {
            return Err(SeriesError::NotConverged { terms: n + 1 });
        }
    }
    Err(SeriesError::NotConverged {
        terms: MAX_SERIES_TERMS,
    })
}

fn finish(sum: f64, max_abs: f64) -> Result<f64, SeriesError> {
    // With terms of mixed sign, |sum| << max|term| means the leading digits
    // cancelled; 1e8 leaves about 8 of the 16 digits.
    if max_abs > 1e8 * sum.abs() {
        Err(SeriesError::Cancellation)
    } else {
        Ok(sum)
    }
}

/// Gauss hypergeometric function `₂F₁(a, b; c; z) = Σ (a)_n (b)_n / ((c)_n n!) zⁿ`
/// for real parameters and `0 <= z < 1`.
///
/// The power series is summed directly, after choosing between it and Euler's
/// transformation `₂F₁(a,b;c;z) = (1−z)^{c−a−b} ₂F₁(c−a, c−b; c; z)`: the terms
/// of a ₂F₁ series behave like `n^{a+b−c−1} zⁿ`, so the form with the smaller
/// exponent converges in fewer terms and never has the huge intermediate terms
/// that a large `a + b − c` produces. At most [`MAX_SERIES_TERMS`] terms are
/// summed; if that is not enough (`z` very close to 1) the function returns
/// [`SeriesError::NotConverged`] rather than a truncated value. This is the
/// function `scipy.special.hyp2f1` computes on this domain.
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Result<f64, SeriesError> {
    if !(a.is_finite() && b.is_finite() && c.is_finite() && z.is_finite()) {
        return Err(SeriesError::Domain("non-finite argument".into()));
    }
    if !(0.0..1.0).contains(&z) {
        return Err(SeriesError::Domain(format!("z = {z} outside [0, 1)")));
    }
    if c <= 0.0 && c == c.floor() {
        return Err(SeriesError::Domain(format!(
            "c = {c} is a non-positive integer"
        )));
    }
    if z == 0.0 {
        return Ok(1.0);
    }
    let direct = a + b - c; // exponent of n in the direct series' terms (+1)
    let euler = c - a - b; // same for the Euler-transformed series
    let (aa, bb, pre) = if euler < direct {
        (c - a, c - b, ((c - a - b) * (-z).ln_1p()).exp())
    } else {
        (a, b, 1.0)
    };
    let settle = (-aa).max(-bb).max(-c).max(0.0).ceil();
    let s = ratio_series(1.0, z, settle, |n| {
        (aa + n) * (bb + n) / ((c + n) * (n + 1.0)) * z
    })?;
    Ok(pre * s)
}

/// `E[g(p)]` for `p ~ Beta(a, b)`, by tanh-sinh (double-exponential) quadrature.
///
/// Substituting `p = 1 / (1 + e^{−π sinh τ})` turns the density's endpoint
/// singularities `p^{a−1} (1−p)^{b−1}` into `p^a (1−p)^b · π cosh τ`, which decays
/// double-exponentially in `τ`, so the trapezoidal rule in `τ` converges fast
/// for any `a, b > 0`. `ln p` and `ln(1−p)` are computed from `s = π sinh τ`
/// directly so that neither end loses precision. `g` receives `(p, 1 − p)`.
/// Returns the estimate and whether successive halvings of the step agreed to
/// `1e-12` relative.
pub fn beta_expectation(a: f64, b: f64, g: impl Fn(f64, f64) -> f64) -> (f64, bool) {
    let lnb = ln_beta(a, b);
    // Beyond τ_max the factor p^a (1−p)^b < e^{−745}: nothing representable is lost.
    let tau_max = (745.0 / (PI * a.min(b))).asinh() + 0.5;
    let f = |tau: f64| -> f64 {
        let s = PI * tau.sinh();
        let ln_p = -softplus(-s);
        let ln_q = -softplus(s);
        let w = (a * ln_p + b * ln_q - lnb).exp() * PI * tau.cosh();
        if w == 0.0 {
            return 0.0;
        }
        w * g(ln_p.exp(), ln_q.exp())
    };
    let mut h = 0.5_f64;
    // Level 0: all nodes k·h.
    let n0 = (tau_max / h).ceil() as i64;
    let mut sum: f64 = (-n0..=n0).map(|k| f(k as f64 * h)).sum();
    let mut estimate = sum * h;
    for _level in 0..10 {
        h *= 0.5;
        // New nodes are the odd multiples of the halved step.
        let n = (tau_max / h).ceil() as i64;
        let mut k = -n + if n % 2 == 0 { 1 } else { 0 };
        while k <= n {
            sum += f(k as f64 * h);
            k += 2;
        }
        let next = sum * h;
        let close = (next - estimate).abs() <= 1e-12 * next.abs().max(1e-300);
        estimate = next;
        if close {
            return (estimate, true);
        }
    }
    (estimate, false)
}
