//! Nelder-Mead minimisation (argmin) with restarts and plain-language diagnostics.

use argmin::core::{CostFunction, Error, Executor, State, TerminationReason};
use argmin::solver::neldermead::NelderMead;

use super::ValueError;

/// Result of [`minimise`].
pub(crate) struct Outcome {
    pub x: Vec<f64>,
    pub iterations: u64,
    pub converged: bool,
    pub termination: String,
}

/// Adapts a closure to argmin's `CostFunction`. NaN costs are mapped to +inf:
/// argmin sorts the simplex with `partial_cmp` and a NaN would scramble the
/// order, while +inf just makes the vertex the worst one.
struct Objective<F>(F);

impl<F: Fn(&[f64]) -> f64> CostFunction for Objective<F> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> Result<f64, Error> {
        let v = (self.0)(p);
        Ok(if v.is_nan() { f64::INFINITY } else { v })
    }
}

/// Stop a run when the standard deviation of the simplex's costs is below
/// this. The objectives are *mean* negative log-likelihoods per customer, so
/// the tolerance is independent of the number of customers; 1e-12 pins the
/// log-parameters to roughly 1e-6.
const SD_TOL: f64 = 1e-12;
/// A restart that improves the cost by less than this (relative) confirms the optimum.
const RESTART_RTOL: f64 = 1e-10;
/// First run plus at most three restarts.
const MAX_RUNS: usize = 4;

/// Minimises `f` from `x0` with Nelder-Mead.
///
/// Nelder-Mead can stall on a collapsed simplex away from the optimum, so
/// after the first run (initial simplex step 0.5 in every coordinate) it is
/// restarted from the best point with a fresh, smaller simplex (step 0.05)
/// until a restart converges without materially improving the cost. The
/// objective must never panic; non-finite values are treated as +inf.
pub(crate) fn minimise<F: Fn(&[f64]) -> f64>(
    f: F,
    x0: Vec<f64>,
    max_iters: u64,
) -> Result<Outcome, ValueError> {
    let objective = |p: &[f64]| {
        let v = f(p);
        if v.is_nan() {
            f64::INFINITY
        } else {
            v
        }
    };
    let mut x = x0;
    let mut cost = objective(&x);
    if !cost.is_finite() {
        return Err(ValueError::Optimizer(
            "objective is not finite at the starting point".into(),
        ));
    }
    let mut iterations = 0u64;
    let mut last_reason = String::new();
    for run in 0..MAX_RUNS {
        let step = if run == 0 { 0.5 } else { 0.05 };
        let mut simplex = vec![x.clone()];
        for i in 0..x.len() {
            let mut v = x.clone();
            v[i] += step;
            simplex.push(v);
        }
        let solver = NelderMead::new(simplex)
            .with_sd_tolerance(SD_TOL)
            .map_err(|e| ValueError::Optimizer(e.to_string()))?;
        let res = Executor::new(Objective(&objective), solver)
            .configure(|s| s.max_iters(max_iters))
            .timer(false)
            .run()
            .map_err(|e| ValueError::Optimizer(e.to_string()))?;
        let state = res.state();
        iterations += state.get_iter();
        let reason = state.get_termination_reason().cloned();
        let run_converged = matches!(reason, Some(TerminationReason::SolverConverged));
        last_reason = reason.map_or_else(|| "not terminated".to_string(), |r| r.text().to_string());
        let new_cost = state.get_best_cost();
        let improvement = cost - new_cost;
        if let Some(best) = state.get_best_param() {
            if new_cost <= cost {
                x = best.clone();
                cost = new_cost;
            }
        }
        if run > 0 && run_converged && improvement <= RESTART_RTOL * (1.0 + cost.abs()) {
            return Ok(Outcome {
                x,
                iterations,
                converged: true,
                termination: format!(
                    "converged: Nelder-Mead simplex cost spread < {SD_TOL:e} and a restart from \
                     the optimum did not improve it ({} runs, {iterations} iterations)",
                    run + 1
                ),
            });
        }
    }
    Ok(Outcome {
        x,
        iterations,
        converged: false,
        termination: format!(
            "not converged after {MAX_RUNS} Nelder-Mead runs ({iterations} iterations); \
             last run: {last_reason}"
        ),
    })
}
