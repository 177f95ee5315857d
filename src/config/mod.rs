//! Configuration: YAML parsed into raw `*Config` structs, then compiled into validated
//! types. Nothing downstream of this module sees a raw config.

pub mod diag;
pub mod environment;
pub mod job;
pub mod mart;
pub mod params;
pub mod pipeline;

pub use diag::{Diagnostic, Diagnostics};
pub use environment::Environment;
pub use job::Job;
pub use pipeline::Pipeline;
