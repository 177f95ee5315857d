//! Column-level lineage from DataFusion's logical plans: for each output column of a
//! model, the columns of the tables it reads that its value comes from. A plan is walked
//! from its table scans up: a projection's or an aggregate's expression takes the columns
//! it references (scalar subqueries included), a filter, sort or limit passes its input's
//! columns on, a join takes each column from the side it comes from, a union merges its
//! inputs position by position. Columns used only to filter, join or sort are not part of
//! a column's lineage (they shape which rows there are, not the value).

use std::collections::{BTreeMap, BTreeSet};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};

/// A column of a table: (table, column).
pub type ColumnRef = (String, String);

/// The lineage of each output column of `plan`, in the order of its schema.
pub fn plan_lineage(plan: &LogicalPlan) -> Vec<BTreeSet<ColumnRef>> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let table = scan.table_name.table().to_string();
            scan.projected_schema
                .fields()
                .iter()
                .map(|f| BTreeSet::from([(table.clone(), f.name().clone())]))
                .collect()
        }
        LogicalPlan::Projection(p) => {
            let input = plan_lineage(&p.input);
            p.expr
                .iter()
                .map(|e| expr_lineage(e, &p.input, &input))
                .collect()
        }
        LogicalPlan::Aggregate(a) => {
            let input = plan_lineage(&a.input);
            let mut out: Vec<BTreeSet<ColumnRef>> = a
                .group_expr
                .iter()
                .chain(a.aggr_expr.iter())
                .map(|e| expr_lineage(e, &a.input, &input))
                .collect();
            // Grouping sets add an internal grouping id.
            out.resize(a.schema.fields().len(), BTreeSet::new());
            out
        }
        LogicalPlan::Window(w) => {
            let input = plan_lineage(&w.input);
            let mut out = input.clone();
            out.extend(
                w.window_expr
                    .iter()
                    .map(|e| expr_lineage(e, &w.input, &input)),
            );
            out
        }
        LogicalPlan::Union(u) => {
            let mut out: Vec<BTreeSet<ColumnRef>> = vec![BTreeSet::new(); u.schema.fields().len()];
            for input in &u.inputs {
                for (i, cols) in plan_lineage(input).into_iter().enumerate() {
                    if let Some(slot) = out.get_mut(i) {
                        slot.extend(cols);
                    }
                }
            }
            out
        }
        LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
            vec![BTreeSet::new(); plan.schema().fields().len()]
        }
        other => {
            // Everything else keeps its input's columns: passed on in place when the
            // schema is as wide as the input's (filter, sort, limit, alias, distinct),
            // otherwise looked up by qualified name in each input (joins).
            let inputs = other.inputs();
            let schema = other.schema();
            if inputs.len() == 1 && inputs[0].schema().fields().len() == schema.fields().len() {
                return plan_lineage(inputs[0]);
            }
            let lineages: Vec<Vec<BTreeSet<ColumnRef>>> =
                inputs.iter().map(|i| plan_lineage(i)).collect();
            schema
                .iter()
                .map(|(qualifier, field)| {
                    for (input, lineage) in inputs.iter().zip(&lineages) {
                        if let Some(i) =
                            input
                                .schema()
                                .maybe_index_of_column(&datafusion::common::Column::new(
                                    qualifier.cloned(),
                                    field.name(),
                                ))
                        {
                            return lineage[i].clone();
                        }
                    }
                    BTreeSet::new()
                })
                .collect()
        }
    }
}

/// The columns of `input` an expression's value comes from, with those of any scalar
/// subquery in it.
fn expr_lineage(
    expr: &Expr,
    input: &LogicalPlan,
    lineage: &[BTreeSet<ColumnRef>],
) -> BTreeSet<ColumnRef> {
    let mut out = BTreeSet::new();
    let _ = expr.apply(|e| {
        match e {
            Expr::Column(c) => {
                if let Some(i) = input.schema().maybe_index_of_column(c) {
                    out.extend(lineage[i].iter().cloned());
                }
            }
            Expr::ScalarSubquery(s) => {
                for cols in plan_lineage(&s.subquery) {
                    out.extend(cols);
                }
                return Ok(TreeNodeRecursion::Jump);
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// Lineage resolved through the model graph: the source columns (tables in `terminal`)
/// each column of each model comes from. `direct` holds each model's lineage onto the
/// tables it reads.
pub fn to_sources(
    direct: &BTreeMap<String, Vec<(String, BTreeSet<ColumnRef>)>>,
    terminal: &BTreeSet<String>,
) -> BTreeMap<String, Vec<(String, BTreeSet<ColumnRef>)>> {
    fn resolve(
        table: &str,
        column: &str,
        direct: &BTreeMap<String, Vec<(String, BTreeSet<ColumnRef>)>>,
        terminal: &BTreeSet<String>,
        memo: &mut BTreeMap<ColumnRef, BTreeSet<ColumnRef>>,
        depth: usize,
    ) -> BTreeSet<ColumnRef> {
        let key = (table.to_string(), column.to_string());
        if let Some(done) = memo.get(&key) {
            return done.clone();
        }
        let out = match direct.get(table) {
            Some(columns) if !terminal.contains(table) && depth < 64 => {
                let mut out = BTreeSet::new();
                if let Some((_, refs)) = columns.iter().find(|(c, _)| c == column) {
                    for (t, c) in refs {
                        out.extend(resolve(t, c, direct, terminal, memo, depth + 1));
                    }
                }
                out
            }
            _ => BTreeSet::from([key.clone()]),
        };
        memo.insert(key, out.clone());
        out
    }
    let mut memo = BTreeMap::new();
    direct
        .iter()
        .map(|(model, columns)| {
            let resolved = columns
                .iter()
                .map(|(column, _)| {
                    (
                        column.clone(),
                        resolve(model, column, direct, terminal, &mut memo, 0),
                    )
                })
                .collect();
            (model.clone(), resolved)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn lineage_follows_projections_aggregates_joins_unions_and_subqueries() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE orders (order_id VARCHAR, customer_id VARCHAR, amount DOUBLE, status VARCHAR)").await.unwrap();
        ctx.sql("CREATE TABLE customers (customer_id VARCHAR, region VARCHAR, email VARCHAR)")
            .await
            .unwrap();
        let sql = "WITH t AS (SELECT customer_id, sum(amount) AS total FROM orders WHERE status = 'done' GROUP BY customer_id)
                   SELECT c.region, t.total * 2 AS doubled, upper(c.email) AS e, (SELECT max(amount) FROM orders) AS top
                   FROM t JOIN customers c ON c.customer_id = t.customer_id
                   UNION ALL SELECT region, 0.0, email, NULL FROM customers";
        let plan = ctx.sql(sql).await.unwrap().into_unoptimized_plan();
        let lineage = plan_lineage(&plan);
        let col = |t: &str, c: &str| (t.to_string(), c.to_string());
        assert_eq!(lineage.len(), 4);
        assert_eq!(lineage[0], BTreeSet::from([col("customers", "region")]));
        assert_eq!(
            lineage[1],
            BTreeSet::from([col("orders", "amount")]),
            "the filter's and the join's columns are not the value's"
        );
        assert_eq!(lineage[2], BTreeSet::from([col("customers", "email")]));
        assert_eq!(lineage[3], BTreeSet::from([col("orders", "amount")]));
    }

    #[test]
    fn lineage_resolves_through_models_to_sources() {
        let col = |t: &str, c: &str| (t.to_string(), c.to_string());
        let mut direct = BTreeMap::new();
        direct.insert(
            "stg".to_string(),
            vec![("amount".to_string(), BTreeSet::from([col("raw", "amt")]))],
        );
        direct.insert(
            "mart".to_string(),
            vec![("total".to_string(), BTreeSet::from([col("stg", "amount")]))],
        );
        let resolved = to_sources(&direct, &BTreeSet::from(["raw".to_string()]));
        assert_eq!(
            resolved["mart"],
            vec![("total".to_string(), BTreeSet::from([col("raw", "amt")]))]
        );
    }
}
