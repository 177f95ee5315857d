//! Built-in steps: Rust code behind a name in a pipeline (`- builtin: describe`). Each
//! kind compiles its own `with:` block and returns a DataFrame; the runner materialises,
//! checks and publishes it exactly like the result of a SQL model.

mod clv_fit;
mod describe;
mod identity;

use std::fmt::Debug;

use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;

use crate::config::params::Params;

/// A configured built-in step.
pub trait BuiltinStep: Send + Sync + Debug {
    /// Tables the step reads; they must be built before it runs.
    fn inputs(&self) -> Vec<String>;

    /// Further tables the step creates besides its own, e.g. `<name>_golden`; later steps
    /// may read them like any table.
    fn extra_outputs(&self, _name: &str) -> Vec<String> {
        Vec::new()
    }

    /// The settings of an identity step, which `explain` links records with again.
    fn identity_settings(&self) -> Option<std::sync::Arc<crate::identity::config::Settings>> {
        None
    }

    /// Builds the step's table.
    fn run<'a>(
        &'a self,
        ctx: &'a SessionContext,
        params: &'a Params,
        env: &'a StepEnv<'a>,
    ) -> BoxFuture<'a, datafusion::error::Result<BuiltinOutput>>;
}

/// Where a step runs: its name, and where the tables it hands to the query engine go (the
/// work folder on one machine, shared storage on a cluster).
pub struct StepEnv<'a> {
    pub name: &'a str,
    pub placement: &'a crate::engine::Placement,
    pub work_dir: &'a std::path::Path,
}

impl StepEnv<'_> {
    /// Whether the run's tables live in shared storage, for a cluster.
    pub fn on_cluster(&self) -> bool {
        self.placement.is_shared()
    }
}

impl crate::identity::engine::Materialize for StepEnv<'_> {
    fn table<'a>(
        &'a self,
        ctx: &'a SessionContext,
        name: &'a str,
        frame: DataFrame,
        in_client: bool,
    ) -> BoxFuture<'a, datafusion::error::Result<DataFrame>> {
        use futures::FutureExt;
        async move {
            let (store, path, url) = self.placement.table_target(self.work_dir, name)?;
            let frame = if in_client {
                self.placement.client_frame(frame)
            } else {
                frame
            };
            let props = crate::publish::scratch_props();
            crate::publish::write_stream(store, path, frame, props).await?;
            let _ = ctx.deregister_table(name);
            ctx.register_parquet(
                name,
                &url,
                datafusion::prelude::ParquetReadOptions::default(),
            )
            .await?;
            ctx.table(name).await
        }
        .boxed()
    }
}

/// What a built-in step produced: its table, and details for the run manifest (such as
/// the convergence of a model fit).
pub struct BuiltinOutput {
    pub frame: DataFrame,
    pub details: Option<serde_json::Value>,
    /// The extra tables, by suffix: ("golden", frame) becomes `<name>_golden`.
    pub tables: Vec<(String, DataFrame)>,
    /// The extra tables the query engine computes (the others are held in this process).
    pub engine_tables: Vec<String>,
}

impl From<DataFrame> for BuiltinOutput {
    fn from(frame: DataFrame) -> Self {
        Self {
            frame,
            details: None,
            tables: Vec::new(),
            engine_tables: Vec::new(),
        }
    }
}

/// A kind of built-in step, found by name.
pub struct BuiltinKind {
    pub name: &'static str,
    pub summary: &'static str,
    /// Validates the step's `with:` block.
    pub compile: fn(&serde_yaml::Value) -> Result<Box<dyn BuiltinStep>, String>,
}

/// Every built-in step kind.
pub fn kinds() -> &'static [BuiltinKind] {
    &[
        BuiltinKind {
            name: "describe",
            summary: "column profile of a table: count, nulls, mean, std, min, median, max",
            compile: describe::compile,
        },
        BuiltinKind {
            name: "clv_fit",
            summary: "BG/NBD and Gamma-Gamma maximum-likelihood fit on a per-customer summary",
            compile: clv_fit::compile,
        },
        BuiltinKind {
            name: "identity",
            summary: "identity resolution: deterministic and Fellegi-Sunter matching into persons with stable customer keys",
            compile: identity::compile,
        },
    ]
}

pub fn find(name: &str) -> Option<&'static BuiltinKind> {
    kinds().iter().find(|k| k.name == name)
}

/// Deserialises a `with:` block into a step's own config type.
pub fn with_block<T: serde::de::DeserializeOwned>(with: &serde_yaml::Value) -> Result<T, String> {
    let value = if with.is_null() {
        serde_yaml::Value::Mapping(Default::default())
    } else {
        with.clone()
    };
    serde_yaml::from_value(value).map_err(|e| e.to_string())
}
