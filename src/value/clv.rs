//! Discounted customer lifetime value from a BG/NBD model and a spend estimate.

use super::{BgNbd, Summary, ValueError};

/// Horizon and economics of a CLV computation.
#[derive(Debug, Clone, PartialEq)]
pub struct ClvOptions {
    /// Number of discrete periods `H` in the horizon.
    pub periods: u32,
    /// Length of one period in the model's time unit (e.g. 4.345 weeks for a
    /// month when the model was fitted in weeks).
    pub period_length: f64,
    /// Discount rate `d` per period (e.g. 0.01 per month); must be > −1.
    pub discount_rate: f64,
    /// Profit margin applied to spend (1.0 = revenue).
    pub margin: f64,
}

/// Discounted value of a customer's purchases over the next `H` periods:
///
/// `CLV = Σ_{k=1..H} (E[Y(kΔ)] − E[Y((k−1)Δ)]) · spend · margin / (1+d)^k`
///
/// where `E[Y(t)]` is [`BgNbd::expected_purchases`], `Δ` the period length
/// and `spend` the expected value per purchase (typically
/// [`GammaGamma::expected_spend`](super::GammaGamma::expected_spend)).
/// Purchases in period `k` are discounted as if they happened at its end —
/// the same discrete scheme as `lifetimes.utils._customer_lifetime_value`.
///
/// `E[Y(t)]` is increasing in `t`, so each term is `>= 0` and the value is
/// non-negative and non-decreasing in `H`; increments are clamped at 0 so
/// that floating-point noise cannot break this.
///
/// Errors for an invalid summary or model, a negative or non-finite `spend`
/// or `margin`, `d <= −1`, or a non-positive `period_length`.
pub fn clv(model: &BgNbd, s: &Summary, spend: f64, opts: &ClvOptions) -> Result<f64, ValueError> {
    model.validate()?;
    s.validate()
        .map_err(|reason| ValueError::InvalidInput { index: 0, reason })?;
    let check = |ok: bool, what: &str, v: f64| {
        if ok {
            Ok(())
        } else {
            Err(ValueError::InvalidParameter(format!(
                "CLV: {what}, got {v}"
            )))
        }
    };
    check(
        spend.is_finite() && spend >= 0.0,
        "spend must be finite and >= 0",
        spend,
    )?;
    let m = opts.margin;
    check(
        m.is_finite() && m >= 0.0,
        "margin must be finite and >= 0",
        m,
    )?;
    let d = opts.discount_rate;
    check(
        d.is_finite() && d > -1.0,
        "discount rate must be finite and > -1",
        d,
    )?;
    let len = opts.period_length;
    check(
        len.is_finite() && len > 0.0,
        "period length must be finite and > 0",
        len,
    )?;
    let value_per_purchase = spend * opts.margin;
    let mut total = 0.0;
    let mut previous = 0.0;
    let mut discount = 1.0;
    for k in 1..=opts.periods {
        let cumulative = model.expected_purchases(f64::from(k) * opts.period_length, s);
        discount /= 1.0 + opts.discount_rate;
        total += (cumulative - previous).max(0.0) * value_per_purchase * discount;
        previous = previous.max(cumulative);
    }
    Ok(total)
}
