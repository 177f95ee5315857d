//! Stores: a URL plus options turned into an object_store client and a prefix. All
//! reads of exports and writes of marts go through here; paths are always relative to
//! the store's prefix, so nothing is read or written outside it.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use url::Url;

use crate::config::environment::StoreSpec;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("store `{store}`: cannot open {url}: {source}")]
    Open {
        store: String,
        url: String,
        source: object_store::Error,
    },
    #[error("store `{store}`: {path}: {source}")]
    Io {
        store: String,
        path: String,
        source: object_store::Error,
    },
    #[error("store `{store}`: invalid path {path:?}: {message}")]
    Path {
        store: String,
        path: String,
        message: String,
    },
    #[error("local file {path}: {source}")]
    Local {
        path: String,
        source: std::io::Error,
    },
    #[error("unknown store `{0}`")]
    Unknown(String),
}

/// An opened store.
#[derive(Debug, Clone)]
pub struct Store {
    pub name: String,
    pub object_store: Arc<dyn ObjectStore>,
    /// Prefix of every path inside the store.
    pub prefix: ObjectPath,
    /// `scheme://authority` under which the store is registered with DataFusion.
    pub base_url: Url,
    /// The store location as configured (without options), for messages and manifests.
    pub display_url: String,
}

impl Store {
    /// Opens a store from its spec. Opening never touches the network: clients are
    /// lazy, so `validate` can compile an environment without reaching storage.
    pub fn open(spec: &StoreSpec) -> Result<Self, StorageError> {
        let url = &spec.url;
        let (object_store, prefix, base_url): (Arc<dyn ObjectStore>, ObjectPath, Url) = if url
            .scheme()
            == "memory"
        {
            let host = url.host_str().unwrap_or(&spec.name).to_string();
            let base = Url::parse(&format!("memory://{host}")).expect("valid memory URL");
            let prefix =
                ObjectPath::parse(url.path()).map_err(|e| path_err(spec, url.path(), e))?;
            (Arc::new(InMemory::new()), prefix, base)
        } else {
            let open_err = |source| StorageError::Open {
                store: spec.name.clone(),
                url: url.to_string(),
                source,
            };
            let (store, prefix) =
                open_url(url, &spec.options, spec.retry.as_ref()).map_err(open_err)?;
            let base = match url.host_str() {
                Some(h) => Url::parse(&format!("{}://{h}", url.scheme())).expect("valid base URL"),
                None => Url::parse(&format!("{}://", url.scheme())).expect("valid base URL"),
            };
            (Arc::from(store), prefix, base)
        };
        Ok(Self {
            name: spec.name.clone(),
            object_store,
            prefix,
            base_url,
            display_url: url.to_string(),
        })
    }

    /// Wraps an existing client (tests inject failing or in-memory stores this way).
    pub fn from_object_store(
        name: &str,
        base_url: &str,
        object_store: Arc<dyn ObjectStore>,
        prefix: &str,
    ) -> Self {
        let base_url = Url::parse(base_url).expect("valid base URL");
        Self {
            name: name.to_string(),
            display_url: format!("{base_url}{prefix}"),
            object_store,
            prefix: ObjectPath::from(prefix),
            base_url,
        }
    }

    /// `rel` (a `/`-separated path inside the store) as a full object path. Empty
    /// segments, `.` and `..` are refused, so a path cannot leave the prefix.
    pub fn path(&self, rel: &str) -> Result<ObjectPath, StorageError> {
        let mut parts: Vec<String> = self
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        for seg in rel.split('/').filter(|s| !s.is_empty()) {
            if seg == "." || seg == ".." {
                return Err(StorageError::Path {
                    store: self.name.clone(),
                    path: rel.to_string(),
                    message: "`.` and `..` are not allowed".into(),
                });
            }
            parts.push(seg.to_string());
        }
        Ok(ObjectPath::from_iter(parts))
    }

    /// A full URL for DataFusion (`s3://bucket/prefix/rel`).
    pub fn url(&self, path: &ObjectPath) -> String {
        let base = self.base_url.as_str();
        if base.ends_with('/') {
            format!("{base}{path}")
        } else {
            format!("{base}/{path}")
        }
    }

    /// The store-relative form of a full object path, for messages.
    pub fn relative(&self, path: &ObjectPath) -> String {
        let full = path.as_ref();
        let prefix = self.prefix.as_ref();
        full.strip_prefix(prefix)
            .unwrap_or(full)
            .trim_start_matches('/')
            .to_string()
    }

    pub fn io_error(&self, path: &ObjectPath, source: object_store::Error) -> StorageError {
        StorageError::Io {
            store: self.name.clone(),
            path: self.relative(path),
            source,
        }
    }

    pub fn local_error(&self, path: &std::path::Path, source: std::io::Error) -> StorageError {
        StorageError::Local {
            path: path.display().to_string(),
            source,
        }
    }

    /// Registers the client with DataFusion so SQL and listing tables can read it.
    pub fn register(&self, ctx: &SessionContext) {
        ctx.register_object_store(&self.base_url, self.object_store.clone());
    }
}

/// A client for `url` with `options` (object_store's configuration keys) and, for remote
/// stores, the retry settings; plus the path prefix the URL names.
fn open_url(
    url: &Url,
    options: &[(String, String)],
    retry: Option<&object_store::RetryConfig>,
) -> Result<(Box<dyn ObjectStore>, ObjectPath), object_store::Error> {
    use object_store::ObjectStoreScheme;
    let (scheme, path) = ObjectStoreScheme::parse(url)?;
    let prefix = ObjectPath::parse(path)?;
    #[cfg(feature = "cloud")]
    {
        macro_rules! remote {
            ($builder:ty, $key:ty) => {{
                let mut builder = <$builder>::new().with_url(url.as_str());
                for (key, value) in options {
                    builder = builder.with_config(key.parse::<$key>()?, value.clone());
                }
                if let Some(retry) = retry {
                    builder = builder.with_retry(retry.clone());
                }
                return Ok((Box::new(builder.build()?), prefix));
            }};
        }
        match scheme {
            ObjectStoreScheme::AmazonS3 => remote!(
                object_store::aws::AmazonS3Builder,
                object_store::aws::AmazonS3ConfigKey
            ),
            ObjectStoreScheme::MicrosoftAzure => {
                remote!(
                    object_store::azure::MicrosoftAzureBuilder,
                    object_store::azure::AzureConfigKey
                )
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                remote!(
                    object_store::gcp::GoogleCloudStorageBuilder,
                    object_store::gcp::GoogleConfigKey
                )
            }
            _ => {}
        }
    }
    let _ = (scheme, retry);
    object_store::parse_url_opts(url, options.iter().map(|(k, v)| (k, v.clone())))
}

fn path_err(spec: &StoreSpec, path: &str, e: object_store::path::Error) -> StorageError {
    StorageError::Path {
        store: spec.name.clone(),
        path: path.to_string(),
        message: e.to_string(),
    }
}

/// The opened stores of one run, by name.
#[derive(Debug, Clone, Default)]
pub struct Stores {
    stores: BTreeMap<String, Store>,
}

impl Stores {
    pub fn open(specs: &BTreeMap<String, StoreSpec>) -> Result<Self, StorageError> {
        let mut stores = BTreeMap::new();
        for (name, spec) in specs {
            stores.insert(name.clone(), Store::open(spec)?);
        }
        Ok(Self { stores })
    }

    pub fn insert(&mut self, store: Store) {
        self.stores.insert(store.name.clone(), store);
    }

    pub fn get(&self, name: &str) -> Result<&Store, StorageError> {
        self.stores
            .get(name)
            .ok_or_else(|| StorageError::Unknown(name.to_string()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Store> {
        self.stores.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_prefix() {
        let spec = StoreSpec::from_location("m", "memory://m/base").unwrap();
        let store = Store::open(&spec).unwrap();
        assert_eq!(store.path("a/b.csv").unwrap().as_ref(), "base/a/b.csv");
        assert!(store.path("../x").is_err());
        assert_eq!(store.url(&store.path("a").unwrap()), "memory://m/base/a");
    }
}
