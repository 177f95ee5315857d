//! crm-marts: turns a retailer's raw exports (ERP, loyalty app, web clickstream,
//! surveys) into customer-analytics Parquet marts with Apache DataFusion.
//!
//! The flow is parse, compile, run: YAML files become raw `*Config` structs
//! ([`config`]), compile into validated [`config::Pipeline`] and
//! [`config::Environment`] values, and [`run::run`] executes them: [`sources`] load
//! exports (quarantining rows that do not fit), SQL models ([`sql`]) and built-in
//! [`steps`] build tables, [`checks`] test them, [`publish`] makes marts live
//! atomically and [`manifest`] records the run.

pub mod checks;
pub mod cluster;
pub mod config;
pub mod contract;
pub mod docs;
pub mod engine;
pub mod functions;
pub mod generate;
pub mod identity;
pub mod joblock;
pub mod lineage;
pub mod liveness;
pub mod manifest;
pub mod memory;
pub mod model_tests;
pub mod publish;
pub mod report;
pub mod run;
pub mod running_window;
pub mod scaffold;
pub mod scratch;
pub mod selection;
pub mod sources;
pub mod sql;
pub mod steps;
pub mod storage;
pub mod validate;
pub mod value;
