//! The object-storage servers of the suite (moto for S3, Azurite, fake-gcs-server), started
//! by `.ci/run` or, without it, once per test binary (`tests/servers/storage_servers.py`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub struct Servers {
    pub s3: String,
    pub azure: String,
    pub gcs: String,
}

pub fn script() -> PathBuf {
    super::repo().join("tests/servers/storage_servers.py")
}

/// The servers of this run: those `.ci/run` started (`CRM_TEST_S3_ENDPOINT`,
/// `CRM_TEST_AZURE_ENDPOINT`, `CRM_TEST_GCS_ENDPOINT`), else a set started for this test
/// binary, stopped when it exits.
pub fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let var = |name: &str| std::env::var(name).ok();
        if let (Some(s3), Some(azure), Some(gcs)) = (
            var("CRM_TEST_S3_ENDPOINT"),
            var("CRM_TEST_AZURE_ENDPOINT"),
            var("CRM_TEST_GCS_ENDPOINT"),
        ) {
            return Servers { s3, azure, gcs };
        }
        let dir = super::repo().join("target").join("storage-servers");
        let out = Command::new("python3")
            .arg(script())
            .args(["start", "--dir"])
            .arg(&dir)
            .args(["--watch-pid", &std::process::id().to_string()])
            .output()
            .expect("run storage_servers.py");
        assert!(
            out.status.success(),
            "cannot start the storage servers:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("endpoints JSON");
        let endpoint = |key: &str| {
            v[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} in {v}"))
                .to_string()
        };
        Servers {
            s3: endpoint("s3_endpoint"),
            azure: endpoint("azure_endpoint"),
            gcs: endpoint("gcs_endpoint"),
        }
    })
}

/// The service-account key that points object_store's GCS client at the emulator:
/// `gcs_base_url` replaces storage.googleapis.com and `disable_oauth` sends an empty bearer
/// token instead of fetching one; the key fields must be present but may be empty.
pub fn gcs_emulator_key(endpoint: &str) -> String {
    serde_json::json!({
        "gcs_base_url": endpoint,
        "disable_oauth": true,
        "client_email": "",
        "private_key": "",
        "private_key_id": "",
    })
    .to_string()
}

pub fn make(kind: &str, flag: &str, endpoint: &str, name: &str) {
    let out = Command::new("python3")
        .arg(script())
        .arg(kind)
        .arg(flag)
        .arg(endpoint)
        .arg(name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{kind} {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A name no other test uses: lower case, digits and dashes, as buckets and containers need.
pub fn unique_name(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let clean: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("t{}-{n}-{clean}", std::process::id());
    name.truncate(60);
    name.trim_end_matches('-').to_string()
}
