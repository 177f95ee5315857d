//! Tests of the value models. The CDNOW reference test reads the `lifetimes`
//! copy of the CDNOW 1/10 sample from `CDNOW_SAMPLE` or from target/cdnow.

use std::time::Instant;

use super::special::{beta_expectation, hyp2f1, ln_gamma, SeriesError};
use super::*;

const CDNOW: BgNbd = BgNbd {
    r: 0.243,
    alpha: 4.414,
    a: 0.793,
    b: 2.426,
};

fn close(a: f64, b: f64, rtol: f64) -> bool {
    (a - b).abs() <= rtol * a.abs().max(b.abs()).max(1e-300)
}

/// Literal closed form of E[Y(t) | x, t_x, T] with the raw ₂F₁ (as `lifetimes` computes it).
fn expected_literal(m: &BgNbd, t: f64, s: &Summary) -> f64 {
    let BgNbd { r, alpha, a, b } = *m;
    let x = s.frequency;
    let z = t / (alpha + s.t + t);
    let f = hyp2f1(r + x, b + x, a + b + x - 1.0, z).unwrap();
    let head = (a + b + x - 1.0) / (a - 1.0);
    let body = 1.0 - ((alpha + s.t) / (alpha + s.t + t)).powf(r + x) * f;
    let denom = if x > 0.0 {
        1.0 + a / (b + x - 1.0) * ((alpha + s.t) / (alpha + s.recency)).powf(r + x)
    } else {
        1.0
    };
    head * body / denom
}

#[test]
fn special_functions_known_values() {
    assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-14));
    assert!(close(
        ln_gamma(0.5),
        std::f64::consts::PI.sqrt().ln(),
        1e-14
    ));
    for &z in &[0.0f64, 0.1, 0.5, 0.9, 0.99] {
        // 2F1(1,1;2;z) = −ln(1−z)/z
        let want = if z == 0.0 { 1.0 } else { -(-z).ln_1p() / z };
        assert!(
            close(hyp2f1(1.0, 1.0, 2.0, z).unwrap(), want, 1e-13),
            "z={z}"
        );
        // 2F1(a,b;b;z) = (1−z)^−a
        assert!(close(
            hyp2f1(2.5, 3.0, 3.0, z).unwrap(),
            (1.0 - z).powf(-2.5),
            1e-13
        ));
        // 2F1(1/2,1/2;3/2;z²) = asin(z)/z
        let w = z.sqrt();
        let want = if z == 0.0 { 1.0 } else { w.asin() / w };
        assert!(
            close(hyp2f1(0.5, 0.5, 1.5, z).unwrap(), want, 1e-13),
            "z={z}"
        );
        // Terminating: 2F1(−2,b;c;z) = 1 − 2bz/c + b(b+1)z²/(c(c+1))
        let (b, c) = (1.5, 2.5);
        let want = 1.0 - 2.0 * b * z / c + b * (b + 1.0) * z * z / (c * (c + 1.0));
        assert!(close(hyp2f1(-2.0, b, c, z).unwrap(), want, 1e-13));
    }
    // Large a+b−c: Euler's transformation keeps the series short and exact.
    let z = 0.9;
    assert!(close(
        hyp2f1(30.0, 5.0, 5.0, z).unwrap(),
        (1.0 - z).powf(-30.0),
        1e-12
    ));
    // Outside the domain / too close to 1: an error, never a number.
    assert!(matches!(
        hyp2f1(1.0, 1.0, 2.0, 1.0),
        Err(SeriesError::Domain(_))
    ));
    assert!(matches!(
        hyp2f1(1.0, 1.0, -2.0, 0.5),
        Err(SeriesError::Domain(_))
    ));
    assert!(matches!(
        hyp2f1(1.0, 1.0, 2.0, f64::NAN),
        Err(SeriesError::Domain(_))
    ));
    assert!(matches!(
        hyp2f1(1.0, 1.0, 2.0, 1.0 - 1e-9),
        Err(SeriesError::NotConverged { .. })
    ));
    // Beta expectations: E[p] = a/(a+b), E[1/p] = (a+b−1)/(a−1), singular densities fine.
    for &(a, b) in &[(0.3, 0.7), (2.0, 3.0), (0.05, 40.0), (7.5, 0.2)] {
        let (m, ok) = beta_expectation(a, b, |p, _| p);
        assert!(ok && close(m, a / (a + b), 1e-11), "E[p] a={a} b={b}: {m}");
        let (m, ok) = beta_expectation(a, b, |_, q| q * q);
        let want = b * (b + 1.0) / ((a + b) * (a + b + 1.0));
        assert!(ok && close(m, want, 1e-11), "E[(1-p)^2] a={a} b={b}: {m}");
    }
    let (m, ok) = beta_expectation(2.5, 1.5, |p, _| 1.0 / p);
    assert!(ok && close(m, 3.0 / 1.5, 1e-11));
}

#[test]
fn bgnbd_log_likelihood_by_hand() {
    // r=1, α=2, a=2, b=3; x=2, t_x=3, T=5:
    // Γ(3)/Γ(1)=2, α^r=2, B(2,5)/B(2,3) = (1/30)/(1/12) = 0.4, (α+T)^−3 = 1/343,
    // 1 + a/(b+x−1)·(7/5)^3 = 1 + 0.5·2.744 = 2.372.
    let m = BgNbd {
        r: 1.0,
        alpha: 2.0,
        a: 2.0,
        b: 3.0,
    };
    let s = Summary::new(2.0, 3.0, 5.0);
    let by_hand = (2.0 * 2.0 * 0.4 / 343.0 * 2.372f64).ln();
    assert!(close(m.customer_log_likelihood(&s), by_hand, 1e-13));
    // x = 0, T = 5: Γ(1)/Γ(1)·2·B(2,3)/B(2,3)/7.
    let s0 = Summary::new(0.0, 0.0, 5.0);
    assert!(close(
        m.customer_log_likelihood(&s0),
        (2.0f64 / 7.0).ln(),
        1e-13
    ));
    assert!(close(
        m.log_likelihood(&[s, s0]),
        by_hand + (2.0f64 / 7.0).ln(),
        1e-13
    ));
    // Frequent buyer with a long gap: the naive product under/overflows, the log form does not.
    let big = Summary::new(300.0, 1.0, 400.0);
    assert!(m.customer_log_likelihood(&big).is_finite());
    assert!(m
        .customer_log_likelihood(&Summary::new(1.5, 1.0, 2.0))
        .is_nan());
}

#[test]
fn gamma_gamma_log_likelihood_by_hand() {
    // p=2, q=3, γ=4; x=2, m=5: Γ(7)/(Γ(4)Γ(3)) · 4³ · 5³ · 2⁴ / 14⁷.
    let g = GammaGamma {
        p: 2.0,
        q: 3.0,
        gamma: 4.0,
    };
    let by_hand = (720.0 / (6.0 * 2.0) * 64.0 * 125.0 * 16.0 / 14f64.powi(7)).ln();
    assert!(close(g.customer_log_likelihood(2.0, 5.0), by_hand, 1e-13));
    assert!(g.customer_log_likelihood(0.0, 5.0).is_nan());
    // E[M | x, m] = p(γ + x m)/(p x + q − 1) = 2·14/6.
    assert!(close(g.expected_spend(2.0, 5.0), 28.0 / 6.0, 1e-15));
    assert!(close(g.expected_spend(0.0, 123.0), 2.0 * 4.0 / 2.0, 1e-15));
    assert_eq!(
        GammaGamma {
            p: 1.0,
            q: 0.5,
            gamma: 1.0
        }
        .expected_spend(0.0, 0.0),
        f64::INFINITY
    );
}

#[test]
fn p_alive_properties() {
    assert_eq!(CDNOW.p_alive(&Summary::new(0.0, 0.0, 30.0)), 1.0);
    let mut prev = 0.0;
    for k in 0..=30 {
        let p = CDNOW.p_alive(&Summary::new(3.0, k as f64, 30.0));
        assert!((0.0..=1.0).contains(&p));
        assert!(p >= prev, "P(alive) must grow with recency");
        prev = p;
    }
    // Extreme inputs stay in [0, 1] (log-odds form).
    let p = CDNOW.p_alive(&Summary::new(500.0, 0.0, 1000.0));
    assert!((0.0..=1.0).contains(&p) && p < 1e-100);
    assert!(CDNOW.p_alive(&Summary::new(-1.0, 0.0, 1.0)).is_nan());
}

#[test]
fn expected_purchases_agrees_with_closed_form_and_integral() {
    let customers = [
        Summary::new(0.0, 0.0, 0.0),
        Summary::new(0.0, 0.0, 38.86),
        Summary::new(2.0, 30.43, 38.86),
        Summary::new(26.0, 30.86, 31.0),
        Summary::new(1.0, 1.71, 38.86),
    ];
    let models = [
        CDNOW,
        BgNbd {
            r: 1.3,
            alpha: 10.0,
            a: 2.5,
            b: 4.0,
        },
        BgNbd {
            r: 0.5,
            alpha: 2.0,
            a: 0.2,
            b: 0.3,
        },
    ];
    for m in &models {
        for s in &customers {
            let mut prev = 0.0;
            assert_eq!(m.expected_purchases(0.0, s), 0.0);
            for &t in &[0.01, 1.0, 10.0, 39.0, 52.0, 200.0, 1000.0] {
                let e = m.expected_purchases(t, s);
                assert!(
                    e.is_finite() && e > prev,
                    "{m:?} {s:?} t={t}: {e} <= {prev}"
                );
                prev = e;
                let lit = expected_literal(m, t, s);
                assert!(
                    close(e, lit, 1e-9),
                    "{m:?} {s:?} t={t}: {e} vs literal {lit}"
                );
                let (q, ok) = m.expected_if_alive_quadrature(t, s);
                assert!(
                    ok && close(e, q * m.p_alive(s), 1e-9),
                    "{m:?} {s:?} t={t}: {e} vs quadrature {q}"
                );
            }
        }
    }
    // a = 1 exactly, where the closed form is 0/0, is continuous with a = 1 ± 1e-6.
    let s = Summary::new(4.0, 20.0, 35.0);
    let at = |a: f64| BgNbd { a, ..CDNOW }.expected_purchases(52.0, &s);
    assert!(close(at(1.0), at(1.0 + 1e-6), 1e-5) && close(at(1.0), at(1.0 - 1e-6), 1e-5));
    let (q, _) = BgNbd { a: 1.0, ..CDNOW }.expected_if_alive_quadrature(52.0, &s);
    assert!(close(
        at(1.0),
        q * BgNbd { a: 1.0, ..CDNOW }.p_alive(&s),
        1e-9
    ));
    // So far beyond α+T that the series would need > 10 000 terms: the quadrature takes over.
    let young = Summary::new(0.0, 0.0, 0.0);
    let far = CDNOW.expected_purchases(1e6, &young);
    assert!(CDNOW.expected_if_alive_series(1e6, &young).is_err());
    assert!(far.is_finite() && far > CDNOW.expected_purchases(1e4, &young));
    // Invalid input: NaN, never a made-up number.
    assert!(CDNOW.expected_purchases(-1.0, &young).is_nan());
    assert!(CDNOW
        .expected_purchases(1.0, &Summary::new(f64::NAN, 0.0, 1.0))
        .is_nan());
}

#[test]
fn clv_is_non_negative_and_monotone() {
    let s = Summary::new(2.0, 30.43, 38.86);
    let mut prev = 0.0;
    for h in 0..=24 {
        let opts = ClvOptions {
            periods: h,
            period_length: 4.345,
            discount_rate: 0.01,
            margin: 0.3,
        };
        let v = clv(&CDNOW, &s, 35.0, &opts).unwrap();
        assert!(v >= prev && v >= 0.0, "h={h}: {v} < {prev}");
        prev = v;
    }
    assert!(prev > 0.0);
    // Undiscounted, margin 1: CLV = E[Y(HΔ)] · spend.
    let opts = ClvOptions {
        periods: 12,
        period_length: 4.0,
        discount_rate: 0.0,
        margin: 1.0,
    };
    assert!(close(
        clv(&CDNOW, &s, 10.0, &opts).unwrap(),
        10.0 * CDNOW.expected_purchases(48.0, &s),
        1e-12
    ));
    let bad = ClvOptions {
        discount_rate: -1.0,
        ..opts.clone()
    };
    assert!(clv(&CDNOW, &s, 10.0, &bad).is_err());
    assert!(clv(&CDNOW, &s, -1.0, &opts).is_err());
}

#[test]
fn fit_input_errors_are_clear() {
    assert!(matches!(BgNbd::fit(&[]), Err(ValueError::EmptyInput)));
    let zeros = vec![Summary::new(0.0, 0.0, 10.0); 5];
    assert!(matches!(
        BgNbd::fit(&zeros),
        Err(ValueError::NoRepeatPurchases)
    ));
    let bad = [
        Summary::new(1.0, 2.0, 3.0),
        Summary::new(1.0, f64::NAN, 3.0),
    ];
    assert!(matches!(
        BgNbd::fit(&bad),
        Err(ValueError::InvalidInput { index: 1, .. })
    ));
    let bad = [Summary::new(1.0, 4.0, 3.0)];
    assert!(matches!(
        BgNbd::fit(&bad),
        Err(ValueError::InvalidInput { index: 0, .. })
    ));
    assert!(matches!(GammaGamma::fit(&[]), Err(ValueError::EmptyInput)));
    assert!(matches!(
        GammaGamma::fit(&[(1.0, 5.0), (0.0, 3.0)]),
        Err(ValueError::InvalidInput { index: 1, .. })
    ));
    assert!(matches!(
        GammaGamma::fit(&[(1.0, f64::INFINITY)]),
        Err(ValueError::InvalidInput { .. })
    ));
    let opts = FitOptions {
        penalizer: -1.0,
        ..FitOptions::default()
    };
    assert!(matches!(
        BgNbd::fit_with(&[Summary::new(1.0, 1.0, 2.0)], &opts),
        Err(ValueError::InvalidParameter(_))
    ));
    // Degenerate data (everybody buys again at once, nobody looks dead): a
    // report, not a panic.
    let degenerate = vec![Summary::new(1.0, 1.0, 1.0); 3];
    let (_, report) = BgNbd::fit(&degenerate).unwrap();
    println!("degenerate BG/NBD fit: {report:?}");
}

#[test]
fn summarise_merges_days_and_ignores_holdout() {
    let tx = vec![
        ("b", 10, 5.0),
        ("a", 0, 1.0),
        ("a", 0, 2.0), // same day: merged
        ("a", 7, 4.0),
        ("a", 14, 6.0),
        ("a", 30, 100.0), // after end_day
        ("c", 40, 1.0),   // first purchase after end_day: dropped
    ];
    let out = summarise(tx, 21, 7.0);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].customer, "a");
    assert_eq!(out[0].summary, Summary::new(2.0, 2.0, 3.0));
    assert_eq!(out[0].monetary, 5.0);
    assert_eq!(out[1].summary, Summary::new(0.0, 0.0, 11.0 / 7.0));
    assert_eq!(out[1].monetary, 0.0);
}

// ---------------------------------------------------------------------------
// CDNOW reference

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn yyyymmdd(s: &str) -> i64 {
    let v: i64 = s.parse().expect("date");
    days_from_civil(v / 10_000, v / 100 % 100, v % 100)
}

#[test]
fn cdnow_reference_fits() {
    // The integration test tests/clv_cdnow.rs downloads the data into target/cdnow and
    // checks the same fits through the pipeline; this one reuses that copy when present.
    let fallback = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/cdnow/lifetimes/datasets/CDNOW_sample.txt"
    );
    let path = match std::env::var("CDNOW_SAMPLE") {
        Ok(p) => p,
        Err(_) if std::path::Path::new(fallback).exists() => fallback.to_string(),
        Err(_) => {
            println!("NOTE: no CDNOW sample yet; tests/clv_cdnow.rs checks the published fits");
            return;
        }
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let tx: Vec<(u32, i64, f64)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].parse().unwrap(), yyyymmdd(f[2]), f[4].parse().unwrap())
        })
        .collect();
    let end = yyyymmdd("19970930");
    let customers = summarise(tx, end, 7.0);
    assert_eq!(customers.len(), 2357);
    let data: Vec<Summary> = customers.iter().map(|c| c.summary).collect();

    // Cross-check against the published summary (2 decimals) when it sits beside the sample.
    let published = std::path::Path::new(&path).with_file_name("cdnow_customers_summary.csv");
    match std::fs::read_to_string(&published) {
        Ok(csv) => {
            let mut n = 0;
            for (line, c) in csv.lines().skip(1).zip(&customers) {
                let f: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
                assert_eq!(f[0] as u32, c.customer);
                assert_eq!(f[1], c.summary.frequency, "customer {}", c.customer);
                assert!(
                    (f[2] - c.summary.recency).abs() <= 0.005 + 1e-9,
                    "customer {}",
                    c.customer
                );
                assert!(
                    (f[3] - c.summary.t).abs() <= 0.005 + 1e-9,
                    "customer {}",
                    c.customer
                );
                n += 1;
            }
            assert_eq!(n, 2357);
            println!(
                "summary matches {} for all {n} customers",
                published.display()
            );
        }
        Err(_) => println!(
            "NOTE: {} not found; summary cross-check skipped",
            published.display()
        ),
    }

    let start = Instant::now();
    let (m, report) = BgNbd::fit(&data).unwrap();
    let bg_time = start.elapsed();
    println!("BG/NBD fit in {bg_time:?}: {m:?} {report:?}");
    assert!(report.converged, "{}", report.termination);
    let round = |v: f64, d: i32| (v * 10f64.powi(d)).round() / 10f64.powi(d);
    assert_eq!(
        [
            round(m.r, 3),
            round(m.alpha, 3),
            round(m.a, 3),
            round(m.b, 3)
        ],
        [0.243, 4.414, 0.793, 2.426]
    );
    assert_eq!(round(report.log_likelihood, 1), -9582.4);
    assert!(close(report.log_likelihood, m.log_likelihood(&data), 1e-12));
    // At the optimum the gradient in log-parameters vanishes (central differences).
    let ll_at = |th: [f64; 4]| {
        let m = BgNbd {
            r: th[0].exp(),
            alpha: th[1].exp(),
            a: th[2].exp(),
            b: th[3].exp(),
        };
        m.log_likelihood(&data) / data.len() as f64
    };
    let th = [m.r.ln(), m.alpha.ln(), m.a.ln(), m.b.ln()];
    for i in 0..4 {
        let (mut up, mut down) = (th, th);
        up[i] += 1e-5;
        down[i] -= 1e-5;
        let grad = (ll_at(up) - ll_at(down)) / 2e-5;
        assert!(grad.abs() < 1e-5, "d lnL / d ln(param {i}) = {grad}");
    }

    let repeat: Vec<(f64, f64)> = customers
        .iter()
        .filter(|c| c.summary.frequency > 0.0)
        .map(|c| (c.summary.frequency, c.monetary))
        .collect();
    assert_eq!(repeat.len(), 946);
    let start = Instant::now();
    let (g, greport) = GammaGamma::fit(&repeat).unwrap();
    let gg_time = start.elapsed();
    println!("Gamma-Gamma fit in {gg_time:?}: {g:?} {greport:?}");
    assert!(greport.converged, "{}", greport.termination);
    assert_eq!(
        [round(g.p, 2), round(g.q, 2), round(g.gamma, 2)],
        [6.25, 3.74, 15.44]
    );
    assert!(bg_time.as_secs_f64() + gg_time.as_secs_f64() < 1.0);

    // Predictions over all customers.
    let mut total_39 = 0.0;
    for (c, s) in customers.iter().zip(&data) {
        let p = m.p_alive(s);
        assert!((0.0..=1.0).contains(&p));
        let e1 = m.expected_purchases(1.0, s);
        let e39 = m.expected_purchases(39.0, s);
        assert!(e1 >= 0.0 && e39 > e1, "customer {}", c.customer);
        total_39 += e39;
        let spend = g.expected_spend(s.frequency, c.monetary);
        let opts = ClvOptions {
            periods: 12,
            period_length: 52.0 / 12.0,
            discount_rate: 0.01,
            margin: 1.0,
        };
        assert!(clv(&m, s, spend, &opts).unwrap() >= 0.0);
    }
    let c1 = &data[0];
    println!(
        "customer 1 {c1:?}: P(alive) = {:.4}, E[Y(39)] = {:.4}, E[M] = {:.2}; sum over customers of E[Y(39)] = {total_39:.1}",
        m.p_alive(c1),
        m.expected_purchases(39.0, c1),
        g.expected_spend(c1.frequency, customers[0].monetary)
    );
}
