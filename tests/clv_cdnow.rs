//! The CLV models reproduce the published CDNOW fits (Fader, Hardie & Lee 2005) when the
//! real pipeline runs on the CDNOW 1/10 sample shipped in the `lifetimes` package:
//! BG/NBD r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, LL = -9582.4; Gamma-Gamma on the
//! 946 repeat buyers p = 6.25, q = 3.74, gamma = 15.44.

mod common;

use common::{read_parquet_rows, repo, Project};

fn round(v: &str, places: i32) -> f64 {
    let f: f64 = v.parse().unwrap();
    let m = 10f64.powi(places);
    (f * m).round() / m
}

#[test]
fn the_pipeline_reproduces_the_published_cdnow_fits() {
    let p = Project::from_fixture("cdnow");
    for file in [
        "value/clv_summary.sql",
        "value/clv_summary.yml",
        "marts/mart_clv.sql",
        "marts/mart_clv.yml",
        "marts/mart_clv_model.yml",
    ] {
        let text = std::fs::read_to_string(repo().join("sql").join(file)).unwrap();
        p.write(&format!("sql/{file}"), &text);
    }
    let data = common::cdnow_dir();
    p.write(
        "config/env.yaml",
        &format!(
            "stores:\n  lifetimes:\n    url: {}\n  marts:\n    url: marts\n",
            data.display()
        ),
    );
    p.run(&["run", "pipelines/cdnow.yaml", "--config", "config/env.yaml"])
        .expect_code(0);

    let model = &read_parquet_rows(&p.path("marts/mart_clv_model.parquet"))[0];
    assert_eq!(model["customers"], "2357");
    assert_eq!(model["repeat_buyers"], "946");
    assert_eq!(round(&model["r"], 3), 0.243, "{model:?}");
    assert_eq!(round(&model["alpha"], 3), 4.414, "{model:?}");
    assert_eq!(round(&model["a"], 3), 0.793, "{model:?}");
    assert_eq!(round(&model["b"], 3), 2.426, "{model:?}");
    assert_eq!(
        round(&model["bgnbd_log_likelihood"], 1),
        -9582.4,
        "{model:?}"
    );
    assert_eq!(round(&model["p"], 2), 6.25, "{model:?}");
    assert_eq!(round(&model["q"], 2), 3.74, "{model:?}");
    assert_eq!(round(&model["gamma"], 2), 15.44, "{model:?}");
    assert_eq!(model["bgnbd_converged"], "true");

    let customers = read_parquet_rows(&p.path("marts/mart_clv.parquet"));
    assert_eq!(customers.len(), 2357);
    for c in &customers {
        let p_alive: f64 = c["p_alive"].parse().unwrap();
        let clv: f64 = c["clv"].parse().unwrap();
        assert!((0.0..=1.0).contains(&p_alive), "{c:?}");
        assert!(clv >= 0.0, "{c:?}");
        if c["frequency"] == "0.0" {
            assert_eq!(
                p_alive, 1.0,
                "no repeat purchase: alive by the model's definition"
            );
        }
    }

    // The fit's diagnostics are in the run manifest.
    let manifest = common::manifest_files(&p.path("marts/_runs"))
        .pop()
        .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let step = manifest["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "mart_clv_model")
        .unwrap();
    assert_eq!(step["details"]["bgnbd"]["converged"], true);
    assert!(step["details"]["fit_ms"].as_u64().unwrap() < 5_000);
}

/// The fit depends on the transaction log alone: reruns with other partitionings give
/// the same parameters, iterations and scores, bit for bit.
#[test]
fn the_cdnow_fit_is_the_same_on_every_rerun() {
    let p = Project::from_fixture("cdnow");
    for file in [
        "value/clv_summary.sql",
        "value/clv_summary.yml",
        "marts/mart_clv.sql",
        "marts/mart_clv.yml",
        "marts/mart_clv_model.yml",
    ] {
        let text = std::fs::read_to_string(repo().join("sql").join(file)).unwrap();
        p.write(&format!("sql/{file}"), &text);
    }
    let data = common::cdnow_dir();
    let mut fits = Vec::new();
    for (i, partitions) in [1, 2, 8, 3, 8, 1].into_iter().enumerate() {
        let config = format!("config/env-{i}.yaml");
        p.write(
            &config,
            &format!(
                "stores:\n  lifetimes:\n    url: {}\n  marts:\n    url: marts-{i}\nexecution:\n  target_partitions: {partitions}\n",
                data.display()
            ),
        );
        p.run(&["run", "pipelines/cdnow.yaml", "--config", &config])
            .expect_code(0);
        let model =
            read_parquet_rows(&p.path(&format!("marts-{i}/mart_clv_model.parquet"))).remove(0);
        let mut scores = read_parquet_rows(&p.path(&format!("marts-{i}/mart_clv.parquet")));
        scores.sort_by(|a, b| {
            a.values()
                .collect::<Vec<_>>()
                .cmp(&b.values().collect::<Vec<_>>())
        });
        fits.push((partitions, model, scores));
    }
    let (_, first_model, first_scores) = &fits[0];
    for (partitions, model, scores) in &fits[1..] {
        assert_eq!(
            model, first_model,
            "mart_clv_model with target_partitions {partitions}"
        );
        assert!(
            scores == first_scores,
            "mart_clv differs with target_partitions {partitions}"
        );
    }
}
