//! Environments (`config/*.yaml`): named stores, execution limits. Raw `*Config` structs
//! mirror the YAML; [`Environment`] is the validated form the runtime uses.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use super::diag::{locate, Diagnostic, Diagnostics};

/// An environment file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// Named stores: where exports are read and marts are published.
    #[serde(default)]
    pub stores: BTreeMap<String, StoreConfig>,
    /// Limits for the query engine.
    #[serde(default)]
    pub execution: ExecutionConfig,
    /// Personal data handling.
    #[serde(default)]
    pub privacy: PrivacyConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Secret key of `keyed_hash()`, e.g. `${CRM_MARTS_HASH_KEY}`.
    pub hash_key: Option<String>,
}

/// One store: a URL (`file://`, `memory://`, `s3://`, `gs://`, `az://`, or a local path)
/// and options passed to object_store (region, endpoint, credentials as `${ENV_VAR}`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub url: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// How transient errors (5xx, timeouts, dropped connections) of a remote store are
    /// retried. Per-request timeouts are options (`timeout`, `connect_timeout`).
    #[serde(default)]
    pub retry: Option<RetryConfig>,
}

/// Retries of a remote store's requests, with exponential backoff.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries of one request; 0 turns retrying off (default 10).
    #[serde(default = "default_max_retries")]
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt (default 180).
    #[serde(default = "default_retry_timeout")]
    pub timeout_seconds: f64,
    /// Wait before the first retry (default 100); it doubles up to `max_backoff_seconds`.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_ms: u64,
    /// Longest wait between two attempts (default 15).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: f64,
}

fn default_max_retries() -> usize {
    10
}
fn default_retry_timeout() -> f64 {
    180.0
}
fn default_initial_backoff() -> u64 {
    100
}
fn default_max_backoff() -> f64 {
    15.0
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionConfig {
    /// Resident memory the whole process may use, e.g. `4GiB`. The query engine's pool
    /// gets `engine_memory` of it (default 60 %): past that, operators spill to disk; a run
    /// whose process passes the limit fails naming the step.
    pub memory_limit: Option<String>,
    /// The query engine's memory pool, e.g. `2GiB` (default: 60 % of `memory_limit`).
    pub engine_memory: Option<String>,
    /// Where spill files and staged sources go (default: the system temp folder).
    pub spill_dir: Option<PathBuf>,
    /// Parallelism of query plans (default: the number of cores).
    pub target_partitions: Option<usize>,
    /// Rows per Arrow batch (default 8192).
    pub batch_size: Option<usize>,
    /// DataFusion settings by their full name (`datafusion.execution.spill_compression:
    /// lz4_frame`), over crm-marts' own choices; unknown names and bad values are errors.
    #[serde(default)]
    pub datafusion: BTreeMap<String, String>,
    /// Where queries run: `local`, in this process (the default), or `ballista`, on an
    /// Apache DataFusion Ballista cluster whose scheduler is `scheduler`.
    pub engine: Option<String>,
    /// The Ballista scheduler, `df://host:50050` (with `engine: ballista`).
    pub scheduler: Option<String>,
}

/// Where a run's queries execute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Engine {
    /// DataFusion in this process.
    #[default]
    Local,
    /// A Ballista cluster, by its scheduler's `df://host:port` URL.
    Ballista { scheduler: String },
}

impl Engine {
    /// An engine from its name and the scheduler URL, as the environment file or the
    /// command line give them. An error names the setting at fault (`engine` or
    /// `scheduler`).
    pub fn parse(engine: &str, scheduler: Option<&str>) -> Result<Self, (&'static str, String)> {
        match engine {
            "local" => match scheduler {
                None => Ok(Self::Local),
                Some(_) => Err(("scheduler", "a scheduler is only used with `engine: ballista`".into())),
            },
            "ballista" => match scheduler {
                None => Err(("engine", "`ballista` needs the scheduler's URL, e.g. `scheduler: df://scheduler-host:50050`".into())),
                Some(url) => Ok(Self::Ballista { scheduler: scheduler_url(url).map_err(|e| ("scheduler", e))? }),
            },
            other => Err(("engine", format!("unknown engine `{other}` (expected `local` or `ballista`)"))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Ballista { .. } => "ballista",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("local"),
            Self::Ballista { scheduler } => write!(f, "ballista {scheduler}"),
        }
    }
}

/// A scheduler URL checked for what Ballista's client needs: `df://host:port`.
fn scheduler_url(text: &str) -> Result<String, String> {
    let expected = "expected df://host:port, e.g. df://scheduler-host:50050";
    let url = Url::parse(text).map_err(|e| format!("scheduler {text:?}: {e} ({expected})"))?;
    if url.scheme() != "df"
        || url.host_str().is_none_or(str::is_empty)
        || url.port().is_none()
        || !matches!(url.path(), "" | "/")
    {
        return Err(format!("scheduler {text:?}: {expected}"));
    }
    Ok(format!(
        "df://{}:{}",
        url.host_str().unwrap_or_default(),
        url.port().unwrap_or_default()
    ))
}

/// A validated environment.
#[derive(Debug, Clone)]
pub struct Environment {
    pub file: Option<PathBuf>,
    pub stores: BTreeMap<String, StoreSpec>,
    pub execution: Execution,
}

#[derive(Debug, Clone)]
pub struct Execution {
    pub memory_limit: Option<usize>,
    /// The query engine's pool when set apart from the default share of `memory_limit`.
    pub engine_memory: Option<usize>,
    pub spill_dir: PathBuf,
    pub target_partitions: usize,
    pub batch_size: usize,
    /// Settings of crm-marts' SQL functions (the keyed-hash key).
    pub functions: crate::functions::FunctionSettings,
    /// Incremental sources parse every file again (`crm-marts run --full-refresh`).
    pub full_refresh: bool,
    /// Only part of the pipeline runs (`crm-marts run --select/--exclude/--defer`).
    pub selection: crate::selection::Selection,
    /// DataFusion settings set over crm-marts' defaults (`execution.datafusion`).
    pub datafusion: BTreeMap<String, String>,
    /// Where queries run (`execution.engine`, `execution.scheduler`).
    pub engine: Engine,
}

impl Default for Execution {
    fn default() -> Self {
        Self {
            memory_limit: None,
            engine_memory: None,
            spill_dir: std::env::temp_dir().join("crm-marts"),
            target_partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            batch_size: 8192,
            functions: Default::default(),
            full_refresh: false,
            selection: Default::default(),
            datafusion: BTreeMap::new(),
            engine: Engine::Local,
        }
    }
}

/// A store with its URL resolved and its options expanded. Option values may be
/// secrets, so `Debug` and `Display` never show them.
#[derive(Clone)]
pub struct StoreSpec {
    pub name: String,
    pub url: Url,
    pub options: Vec<(String, String)>,
    /// Retry settings of a remote store (object_store's defaults when absent).
    pub retry: Option<object_store::RetryConfig>,
}

impl fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StoreSpec")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("options", &keys)
            .finish()
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.url)
    }
}

impl StoreSpec {
    /// A store from a URL or local path, with no options.
    pub fn from_location(name: &str, location: &str) -> Result<Self, String> {
        Ok(Self {
            name: name.to_string(),
            url: resolve_url(location)?,
            options: Vec::new(),
            retry: None,
        })
    }
}

impl Environment {
    /// An environment with no stores and default limits.
    pub fn empty() -> Self {
        Self {
            file: None,
            stores: BTreeMap::new(),
            execution: Execution::default(),
        }
    }

    /// Reads and compiles an environment file, reporting every problem.
    pub fn load(path: &Path) -> Result<Self, Diagnostics> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics(vec![Diagnostic::new(
                path,
                format!("cannot read file: {e}"),
            )])
        })?;
        let raw: EnvironmentConfig = serde_yaml::from_str(&text)
            .map_err(|e| Diagnostics(vec![Diagnostic::from_yaml(path, &e)]))?;
        compile(path, &text, raw, &|name| std::env::var(name).ok())
    }
}

/// Compiles a parsed environment; `env` looks up environment variables.
pub fn compile(
    file: &Path,
    text: &str,
    raw: EnvironmentConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Environment, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut stores = BTreeMap::new();
    for (name, store) in raw.stores {
        let at = |key: &str| locate(text, &["stores", &name, key]);
        let url = match expand_env(&store.url, env) {
            Ok(expanded) => match resolve_url(&expanded) {
                Ok(url) => Some(url),
                Err(e) => {
                    diags.push(
                        Diagnostic::new(file, format!("stores.{name}.url: {e}")).at_opt(at("url")),
                    );
                    None
                }
            },
            Err(e) => {
                diags.push(
                    Diagnostic::new(file, format!("stores.{name}.url: {e}")).at_opt(at("url")),
                );
                None
            }
        };
        let mut options = Vec::new();
        for (key, value) in store.options {
            match expand_env(&value, env) {
                Ok(v) => options.push((key, v)),
                Err(e) => diags.push(
                    Diagnostic::new(file, format!("stores.{name}.options.{key}: {e}"))
                        .at_opt(locate(text, &["stores", &name, "options", &key])),
                ),
            }
        }
        let retry = match &store.retry {
            None => None,
            Some(r) => {
                let mut seconds = |v: f64, key: &str| {
                    if v.is_finite() && v >= 0.0 {
                        Some(std::time::Duration::from_secs_f64(v))
                    } else {
                        diags.push(
                            Diagnostic::new(file, format!("stores.{name}.retry.{key}: expected a number of seconds >= 0, found {v}"))
                                .at_opt(locate(text, &["stores", &name, "retry", key])),
                        );
                        None
                    }
                };
                let timeout = seconds(r.timeout_seconds, "timeout_seconds");
                let max_backoff = seconds(r.max_backoff_seconds, "max_backoff_seconds");
                match (timeout, max_backoff) {
                    (Some(retry_timeout), Some(max_backoff)) => Some(object_store::RetryConfig {
                        backoff: object_store::BackoffConfig {
                            init_backoff: std::time::Duration::from_millis(r.initial_backoff_ms),
                            max_backoff,
                            base: 2.0,
                        },
                        max_retries: r.max_retries,
                        retry_timeout,
                    }),
                    _ => None,
                }
            }
        };
        if let Some(url) = url {
            stores.insert(
                name.clone(),
                StoreSpec {
                    name,
                    url,
                    options,
                    retry,
                },
            );
        }
    }

    let mut execution = Execution::default();
    if let Some(limit) = &raw.execution.memory_limit {
        match parse_bytes(limit) {
            Ok(bytes) => execution.memory_limit = Some(bytes),
            Err(e) => diags.push(
                Diagnostic::new(file, format!("execution.memory_limit: {e}"))
                    .at_opt(locate(text, &["execution", "memory_limit"])),
            ),
        }
    }
    if let Some(pool) = &raw.execution.engine_memory {
        match parse_bytes(pool) {
            Ok(bytes) if execution.memory_limit.is_some_and(|limit| bytes > limit) => diags.push(
                Diagnostic::new(file, "execution.engine_memory: larger than execution.memory_limit, which bounds the whole process")
                    .at_opt(locate(text, &["execution", "engine_memory"])),
            ),
            Ok(bytes) => execution.engine_memory = Some(bytes),
            Err(e) => diags.push(
                Diagnostic::new(file, format!("execution.engine_memory: {e}"))
                    .at_opt(locate(text, &["execution", "engine_memory"])),
            ),
        }
    }
    if let Some(dir) = raw.execution.spill_dir {
        execution.spill_dir = dir;
    }
    if let Some(n) = raw.execution.target_partitions {
        if n == 0 {
            diags.push(
                Diagnostic::new(file, "execution.target_partitions: must be at least 1")
                    .at_opt(locate(text, &["execution", "target_partitions"])),
            );
        } else {
            execution.target_partitions = n;
        }
    }
    if let Some(n) = raw.execution.batch_size {
        if n == 0 {
            diags.push(
                Diagnostic::new(file, "execution.batch_size: must be at least 1")
                    .at_opt(locate(text, &["execution", "batch_size"])),
            );
        } else {
            execution.batch_size = n;
        }
    }
    for (name, value) in &raw.execution.datafusion {
        let mut options = datafusion::config::ConfigOptions::default();
        match options.set(name, value) {
            Ok(()) => {
                execution.datafusion.insert(name.clone(), value.clone());
            }
            Err(e) => diags.push(
                Diagnostic::new(file, format!("execution.datafusion: `{name}`: {e}"))
                    .at_opt(locate(text, &["execution", "datafusion", name])),
            ),
        }
    }
    let scheduler = match raw
        .execution
        .scheduler
        .as_deref()
        .map(|s| expand_env(s, env))
        .transpose()
    {
        Ok(s) => s,
        Err(e) => {
            diags.push(
                Diagnostic::new(file, format!("execution.scheduler: {e}"))
                    .at_opt(locate(text, &["execution", "scheduler"])),
            );
            None
        }
    };
    match Engine::parse(
        raw.execution.engine.as_deref().unwrap_or("local"),
        scheduler.as_deref(),
    ) {
        Ok(engine) => execution.engine = engine,
        Err((key, e)) => {
            let at = locate(text, &["execution", key]).or_else(|| locate(text, &["execution"]));
            diags.push(Diagnostic::new(file, format!("execution.{key}: {e}")).at_opt(at));
        }
    }
    if let Some(key) = &raw.privacy.hash_key {
        match expand_env(key, env) {
            Ok(k) if k.is_empty() => diags.push(
                Diagnostic::new(file, "privacy.hash_key: the key is empty")
                    .at_opt(locate(text, &["privacy", "hash_key"])),
            ),
            Ok(k) => execution.functions.hash_key = Some(k),
            Err(e) => diags.push(
                Diagnostic::new(file, format!("privacy.hash_key: {e}"))
                    .at_opt(locate(text, &["privacy", "hash_key"])),
            ),
        }
    }
    diags.into_result(Environment {
        file: Some(file.to_path_buf()),
        stores,
        execution,
    })
}

/// Expands `${VAR}` and `${VAR:-default}`; a missing variable without default is an error
/// that names the variable (never its value).
pub fn expand_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in {value:?}"))?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{inner}}}` is not a valid environment variable reference"
            ));
        }
        match (env(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A store location as a URL: URLs with a scheme are kept, local paths become absolute
/// `file://` URLs (relative to the working directory).
pub fn resolve_url(location: &str) -> Result<Url, String> {
    const SCHEMES: [&str; 8] = ["file", "memory", "s3", "s3a", "gs", "az", "abfs", "abfss"];
    if let Some((scheme, _)) = location.split_once("://") {
        if !SCHEMES.contains(&scheme) {
            return Err(format!(
                "unsupported URL scheme `{scheme}://` (expected one of: {})",
                SCHEMES.map(|s| format!("{s}://")).join(", ")
            ));
        }
        let mut url = Url::parse(location).map_err(|e| format!("invalid URL {location:?}: {e}"))?;
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        return Ok(url);
    }
    if location.is_empty() {
        return Err("empty location".into());
    }
    let path = Path::new(location);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot resolve {location:?}: {e}"))?
            .join(path)
    };
    let abs = normalize(&abs);
    Url::from_directory_path(&abs).map_err(|_| format!("cannot turn {location:?} into a file URL"))
}

/// Removes `.` and `..` components without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Parses sizes such as `4GiB`, `512MiB`, `2GB`, `1048576`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size (expected e.g. 4GiB, 512MiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?} (expected B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    Ok((n * mult) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_env_with_defaults_and_names_missing_variables() {
        let env = |k: &str| (k == "A").then(|| "x".to_string());
        assert_eq!(expand_env("s3://${A}/p", &env).unwrap(), "s3://x/p");
        assert_eq!(expand_env("${B:-d}", &env).unwrap(), "d");
        let err = expand_env("${B}", &env).unwrap_err();
        assert!(err.contains("B is not set"), "{err}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("512 MiB").unwrap(), 512 << 20);
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn relative_paths_become_file_urls() {
        let url = resolve_url("data/marts").unwrap();
        assert_eq!(url.scheme(), "file");
        assert!(url.path().ends_with("/data/marts/"));
        assert!(resolve_url("ftp://x").unwrap_err().contains("unsupported"));
    }

    fn compile_text(text: &str) -> Result<Environment, Diagnostics> {
        let raw: EnvironmentConfig = serde_yaml::from_str(text).unwrap();
        compile(Path::new("env.yaml"), text, raw, &|_| None)
    }

    #[test]
    fn the_engine_and_its_scheduler_are_checked_and_located() {
        assert_eq!(
            compile_text("execution:\n  target_partitions: 2\n")
                .unwrap()
                .execution
                .engine,
            Engine::Local
        );
        let env =
            compile_text("execution:\n  engine: ballista\n  scheduler: df://sched.example:50050\n")
                .unwrap();
        assert_eq!(
            env.execution.engine,
            Engine::Ballista {
                scheduler: "df://sched.example:50050".into()
            }
        );
        let err = compile_text("execution:\n  engine: ballista\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("env.yaml:2:3")
                && err.contains("execution.engine")
                && err.contains("scheduler's URL"),
            "{err}"
        );
        let err = compile_text("execution:\n  engine: spark\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown engine `spark`"), "{err}");
        let err = compile_text("execution:\n  engine: ballista\n  scheduler: http://sched:50050\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("env.yaml:3:3") && err.contains("expected df://host:port"),
            "{err}"
        );
        let err = compile_text("execution:\n  scheduler: df://sched:50050\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("execution.scheduler")
                && err.contains("only used with `engine: ballista`"),
            "{err}"
        );
    }

    #[test]
    fn datafusion_settings_are_checked_by_datafusion_and_located() {
        let env = compile_text(
            "execution:\n  datafusion:\n    datafusion.execution.spill_compression: lz4_frame\n",
        )
        .unwrap();
        assert_eq!(
            env.execution.datafusion["datafusion.execution.spill_compression"],
            "lz4_frame"
        );
        let ctx = crate::run::session(&env.execution, std::env::temp_dir()).unwrap();
        let options = ctx.state().config_options().clone();
        assert_eq!(
            options.execution.spill_compression,
            datafusion::common::config::SpillCompression::Lz4Frame
        );
        let err = compile_text(
            "execution:\n  datafusion:\n    datafusion.execution.no_such_setting: 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("datafusion.execution.no_such_setting") && err.contains(":3:"),
            "{err}"
        );
        let err =
            compile_text("execution:\n  datafusion:\n    datafusion.execution.batch_size: many\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("batch_size") && err.contains(":3:"), "{err}");
    }

    #[test]
    fn retry_settings_with_defaults_and_located_errors() {
        let env = compile_text("stores:\n  m:\n    url: s3://b/p\n    retry: { max_retries: 3, timeout_seconds: 20 }\n").unwrap();
        let retry = env.stores["m"].retry.clone().unwrap();
        assert_eq!(retry.max_retries, 3);
        assert_eq!(retry.retry_timeout, std::time::Duration::from_secs(20));
        assert_eq!(
            retry.backoff.init_backoff,
            std::time::Duration::from_millis(100)
        );
        assert_eq!(
            retry.backoff.max_backoff,
            std::time::Duration::from_secs(15)
        );
        assert!(compile_text("stores:\n  m:\n    url: s3://b/p\n")
            .unwrap()
            .stores["m"]
            .retry
            .is_none());
        let err = compile_text(
            "stores:\n  m:\n    url: s3://b/p\n    retry:\n      timeout_seconds: -1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("stores.m.retry.timeout_seconds") && err.contains(":5:"),
            "{err}"
        );
    }

    #[test]
    fn debug_hides_option_values() {
        let s = StoreSpec {
            name: "s".into(),
            url: Url::parse("s3://b/").unwrap(),
            options: vec![("aws_secret_access_key".into(), "hunter2".into())],
            retry: None,
        };
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }
}
