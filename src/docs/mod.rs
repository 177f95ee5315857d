//! `crm-marts docs PIPELINE --out DIR`: a static site of a pipeline, readable offline.
//! Every source and step has a page with its description, columns (types as planned),
//! checks, SQL and column-level lineage (from DataFusion's logical plans, see
//! [`crate::lineage`]); the index draws the model graph as inline SVG. `lineage.json`
//! holds the same lineage for other tools. Nothing is read from storage: the site comes
//! from the pipeline's files and the plans `validate` makes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::diag::{Diagnostic, Diagnostics};
use crate::config::pipeline::{Pipeline, StepKind};
use crate::lineage::ColumnRef;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ref {
    pub table: String,
    pub column: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnDoc {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub description: String,
    pub checks: Vec<String>,
    /// The columns of the tables the step reads that the value comes from.
    pub direct: Vec<Ref>,
    /// The same, followed through every model to sources (and built-in steps' tables).
    pub sources: Vec<Ref>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableDoc {
    pub name: String,
    /// `source`, `view`, `table`, `mart` or `builtin`.
    pub kind: String,
    pub description: String,
    pub file: Option<String>,
    pub reads: Vec<String>,
    pub read_by: Vec<String>,
    pub contract: bool,
    pub columns: Vec<ColumnDoc>,
    pub checks: Vec<String>,
    pub sql: Option<String>,
    #[serde(skip)]
    pub depth: usize,
}

#[derive(Debug, Serialize)]
struct GraphNode {
    name: String,
    kind: String,
    fill: &'static str,
    x: usize,
    y: usize,
}

#[derive(Debug, Serialize)]
struct GraphEdge {
    x1: usize,
    y1: usize,
    x2: usize,
    y2: usize,
    cx: usize,
}

#[derive(Debug, Serialize)]
struct Graph {
    width: usize,
    height: usize,
    node_width: usize,
    node_height: usize,
    nodes: Vec<GraphNode>,
    edges: Vec<GraphEdge>,
}

const NODE_WIDTH: usize = 200;
const NODE_HEIGHT: usize = 20;
const COLUMN_GAP: usize = 48;
const ROW_GAP: usize = 6;
const MARGIN: usize = 8;

fn refs(set: &BTreeSet<ColumnRef>) -> Vec<Ref> {
    set.iter()
        .map(|(t, c)| Ref {
            table: t.clone(),
            column: c.clone(),
        })
        .collect()
}

/// Everything the site shows, per table in pipeline order (sources first).
pub async fn collect(pipeline: &Pipeline) -> (Diagnostics, Vec<TableDoc>) {
    let (diags, ctx, plans) = crate::validate::plan_models(pipeline).await;
    let schema_of = |name: String| {
        let ctx = ctx.clone();
        async move {
            ctx.table(name.as_str())
                .await
                .ok()
                .map(|df| df.schema().as_arrow().clone())
        }
    };
    // Lineage onto the tables each model reads, then through the graph.
    let mut direct: BTreeMap<String, Vec<(String, BTreeSet<ColumnRef>)>> = BTreeMap::new();
    for (name, plan) in &plans {
        let columns = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .zip(crate::lineage::plan_lineage(plan))
            .collect();
        direct.insert(name.clone(), columns);
    }
    let terminal: BTreeSet<String> = pipeline
        .sources
        .iter()
        .map(|s| s.name.clone())
        .chain(
            pipeline
                .steps
                .iter()
                .filter(|s| matches!(s.kind, StepKind::Builtin { .. }))
                .flat_map(|s| {
                    std::iter::once(s.name.clone()).chain(s.extra_outputs.iter().cloned())
                }),
        )
        .collect();
    let resolved = crate::lineage::to_sources(&direct, &terminal);

    let mut read_by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for step in &pipeline.steps {
        for d in &step.depends_on {
            read_by
                .entry(d.clone())
                .or_default()
                .insert(step.name.clone());
        }
    }
    let mut depth: BTreeMap<String, usize> = pipeline
        .sources
        .iter()
        .map(|s| (s.name.clone(), 0))
        .collect();
    let mut docs = Vec::new();
    for source in &pipeline.sources {
        let schema = schema_of(source.name.clone()).await;
        let columns = match (&source.schema, &schema) {
            (_, Some(schema)) => schema
                .fields()
                .iter()
                .map(|f| ColumnDoc {
                    name: f.name().clone(),
                    data_type: crate::contract::type_name(f.data_type()),
                    description: String::new(),
                    checks: if f.is_nullable() {
                        vec![]
                    } else {
                        vec!["required".into()]
                    },
                    direct: vec![],
                    sources: vec![],
                })
                .collect(),
            _ => vec![],
        };
        docs.push(TableDoc {
            name: source.name.clone(),
            kind: "source".into(),
            description: format!("{:?} export", source.format).to_lowercase(),
            file: None,
            reads: vec![],
            read_by: read_by
                .get(&source.name)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
            contract: false,
            columns,
            checks: vec![],
            sql: None,
            depth: 0,
        });
    }
    for step in &pipeline.steps {
        let d = 1 + step
            .depends_on
            .iter()
            .filter_map(|p| depth.get(p))
            .copied()
            .max()
            .unwrap_or(0);
        depth.insert(step.name.clone(), d);
        let kind = match (&step.kind, &step.publish) {
            (StepKind::Builtin { .. }, _) => "builtin",
            (_, Some(_)) => "mart",
            _ if step.materialize => "table",
            _ => "view",
        };
        let schema = schema_of(step.name.clone()).await;
        let spec = step.spec.as_ref();
        let planned: Vec<(String, String)> = match &schema {
            Some(s) => s
                .fields()
                .iter()
                .map(|f| (f.name().clone(), crate::contract::type_name(f.data_type())))
                .collect(),
            None => spec
                .map(|sp| {
                    sp.columns
                        .iter()
                        .map(|c| {
                            (
                                c.name.clone(),
                                c.data_type
                                    .as_ref()
                                    .map(|t| t.to_string())
                                    .unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        let lineage_direct = direct.get(&step.name);
        let lineage_sources = resolved.get(&step.name);
        let find = |l: Option<&Vec<(String, BTreeSet<ColumnRef>)>>, c: &str| {
            l.and_then(|cols| cols.iter().find(|(n, _)| n == c))
                .map(|(_, s)| refs(s))
                .unwrap_or_default()
        };
        let columns = planned
            .iter()
            .map(|(name, ty)| ColumnDoc {
                name: name.clone(),
                data_type: ty.clone(),
                description: spec
                    .and_then(|s| s.column(name))
                    .map(|c| c.description.clone())
                    .unwrap_or_default(),
                checks: spec
                    .map(|s| {
                        s.checks
                            .iter()
                            .filter(|c| c.column.as_deref() == Some(name.as_str()))
                            .map(|c| c.kind.to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
                direct: find(lineage_direct, name),
                sources: find(lineage_sources, name),
            })
            .collect();
        let (file, sql) = match &step.kind {
            StepKind::Sql(model) => (
                Some(model.file.display().to_string()),
                std::fs::read_to_string(&model.file).ok(),
            ),
            StepKind::Builtin { kind, .. } => (
                Some(format!(
                    "built-in step `{kind}` in {}",
                    pipeline.file.display()
                )),
                None,
            ),
        };
        docs.push(TableDoc {
            name: step.name.clone(),
            kind: kind.into(),
            description: spec
                .map(|s| s.description.trim().to_string())
                .unwrap_or_default(),
            file,
            reads: step.depends_on.clone(),
            read_by: read_by
                .get(&step.name)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
            contract: spec.is_some_and(|s| s.contract),
            columns,
            checks: spec
                .map(|s| {
                    s.checks
                        .iter()
                        .filter(|c| c.column.is_none())
                        .map(|c| c.kind.to_string())
                        .collect()
                })
                .unwrap_or_default(),
            sql,
            depth: d,
        });
    }
    (diags, docs)
}

/// Places each table in the column of its depth in the graph.
fn graph(docs: &[TableDoc]) -> Graph {
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let mut at: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut nodes = Vec::new();
    for t in docs {
        let row = rows.entry(t.depth).or_default();
        let (x, y) = (
            MARGIN + t.depth * (NODE_WIDTH + COLUMN_GAP),
            MARGIN + *row * (NODE_HEIGHT + ROW_GAP),
        );
        *row += 1;
        at.insert(t.name.as_str(), (x, y));
        let fill = match t.kind.as_str() {
            "source" => "#fde8c8",
            "mart" => "#d6f0dd",
            "builtin" => "#e5dcf7",
            _ => "#eef1f6",
        };
        nodes.push(GraphNode {
            name: t.name.clone(),
            kind: t.kind.clone(),
            fill,
            x,
            y,
        });
    }
    let mut edges = Vec::new();
    for t in docs {
        let Some(&(x2, y2)) = at.get(t.name.as_str()) else {
            continue;
        };
        for r in &t.reads {
            if let Some(&(x1, y1)) = at.get(r.as_str()) {
                let (x1, y1, y2) = (x1 + NODE_WIDTH, y1 + NODE_HEIGHT / 2, y2 + NODE_HEIGHT / 2);
                edges.push(GraphEdge {
                    x1,
                    y1,
                    x2,
                    y2,
                    cx: (x1 + x2) / 2,
                });
            }
        }
    }
    let columns = rows.keys().max().map(|d| d + 1).unwrap_or(1);
    let tallest = rows.values().max().copied().unwrap_or(1);
    Graph {
        width: 2 * MARGIN + columns * NODE_WIDTH + (columns - 1) * COLUMN_GAP,
        height: 2 * MARGIN + tallest * (NODE_HEIGHT + ROW_GAP),
        node_width: NODE_WIDTH,
        node_height: NODE_HEIGHT,
        nodes,
        edges,
    }
}

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("index.html", include_str!("templates/index.html")),
        ("table.html", include_str!("templates/table.html")),
    ] {
        env.add_template(name, source)
            .expect("the templates are valid");
    }
    env
}

/// Writes the site of `pipeline` into `out`; returns the pages written.
pub async fn write_site(pipeline: &Pipeline, out: &Path) -> Result<Vec<PathBuf>, Diagnostics> {
    let (diags, docs) = collect(pipeline).await;
    if !diags.is_empty() {
        return Err(diags);
    }
    let io = |path: &Path, e: std::io::Error| {
        Diagnostics(vec![Diagnostic::new(path, format!("cannot write: {e}"))])
    };
    let render = |e: minijinja::Error| {
        Diagnostics(vec![Diagnostic::new(
            &pipeline.file,
            format!("rendering the docs: {e:#}"),
        )])
    };
    std::fs::create_dir_all(out.join("t")).map_err(|e| io(out, e))?;
    let env = environment();
    let name = pipeline.name.clone();
    let mut written = Vec::new();
    let sources: Vec<&TableDoc> = docs.iter().filter(|t| t.kind == "source").collect();
    let models: Vec<&TableDoc> = docs.iter().filter(|t| t.kind != "source").collect();
    let index = env
        .get_template("index.html")
        .and_then(|t| {
            t.render(minijinja::context! {
                pipeline => name,
                root => "",
                description => "",
                file => pipeline.file.display().to_string(),
                sources => sources,
                models => models,
                marts => docs.iter().filter(|t| t.kind == "mart").count(),
                graph => graph(&docs),
            })
        })
        .map_err(render)?;
    let path = out.join("index.html");
    std::fs::write(&path, index).map_err(|e| io(&path, e))?;
    written.push(path);
    for t in &docs {
        let page = env
            .get_template("table.html")
            .and_then(|tpl| {
                tpl.render(minijinja::context! { pipeline => name, root => "../", t => t })
            })
            .map_err(render)?;
        let path = out.join("t").join(format!("{}.html", t.name));
        std::fs::write(&path, page).map_err(|e| io(&path, e))?;
        written.push(path);
    }
    let lineage: BTreeMap<&str, BTreeMap<&str, serde_json::Value>> = docs
        .iter()
        .filter(|t| t.kind != "source")
        .map(|t| {
            let columns = t
                .columns
                .iter()
                .map(|c| (c.name.as_str(), serde_json::json!({ "type": c.data_type, "direct": c.direct, "sources": c.sources })))
                .collect();
            (t.name.as_str(), columns)
        })
        .collect();
    let path = out.join("lineage.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&lineage).expect("serialisable"),
    )
    .map_err(|e| io(&path, e))?;
    written.push(path);
    Ok(written)
}
