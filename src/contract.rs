//! Contracts: what a mart promises the BI tools that read it. A mart whose YAML says
//! `contract: enforced` declares a `type` for every column; `validate` plans the model and
//! fails on a missing, extra or retyped column, a run refuses to publish a table that
//! breaks the contract, and `validate` with an environment compares the contract with the
//! schema of the version readers see now, so a breaking change is known before it lands.

use std::fmt;

use datafusion::arrow::datatypes::{DataType, Schema};

use crate::config::mart::MartSpec;

/// A column type as a contract writes it (SQL names, as DuckDB, Power BI and Spark show
/// them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractType {
    String,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    /// Unsigned 64-bit (`row_number`, `count` in DataFusion); DuckDB's UBIGINT.
    UBigInt,
    Float,
    Double,
    Boolean,
    Date,
    Timestamp,
    TimestampTz,
    Decimal(u8, i8),
}

pub const TYPE_NAMES: &str =
    "string, tinyint, smallint, int, bigint, ubigint, float, double, boolean, date, timestamp, timestamptz, decimal(p,s)";

impl ContractType {
    /// Reads a type name (case-insensitive; `varchar`, `integer`, `real`, ... accepted).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim().to_ascii_lowercase();
        let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(match t.as_str() {
            "string" | "varchar" | "text" | "utf8" => ContractType::String,
            "tinyint" | "int8" => ContractType::TinyInt,
            "smallint" | "int16" => ContractType::SmallInt,
            "int" | "integer" | "int32" => ContractType::Int,
            "bigint" | "int64" | "long" => ContractType::BigInt,
            "ubigint" | "uint64" | "bigint unsigned" => ContractType::UBigInt,
            "float" | "real" | "float32" => ContractType::Float,
            "double" | "float64" | "double precision" => ContractType::Double,
            "boolean" | "bool" => ContractType::Boolean,
            "date" => ContractType::Date,
            "timestamp" | "timestamp without time zone" => ContractType::Timestamp,
            "timestamptz" | "timestamp with time zone" => ContractType::TimestampTz,
            other => {
                let args = other
                    .strip_prefix("decimal")
                    .or_else(|| other.strip_prefix("numeric"))
                    .map(str::trim)
                    .and_then(|r| r.strip_prefix('('))
                    .and_then(|r| r.strip_suffix(')'));
                let Some(args) = args else {
                    return Err(format!(
                        "unknown type `{text}`, expected one of {TYPE_NAMES}"
                    ));
                };
                let mut parts = args.split(',').map(str::trim);
                let precision = parts
                    .next()
                    .and_then(|p| p.parse::<u8>().ok())
                    .filter(|p| (1..=76).contains(p));
                let scale = parts.next().unwrap_or("0").parse::<i8>().ok();
                match (precision, scale, parts.next()) {
                    (Some(p), Some(s), None) if s >= 0 && (s as u8) <= p => ContractType::Decimal(p, s),
                    _ => return Err(format!("type `{text}`: expected decimal(precision, scale) with 1 <= precision <= 76 and 0 <= scale <= precision")),
                }
            }
        })
    }

    /// Whether a column of Arrow type `actual` keeps this promise. The string family is one
    /// type to a reader (Parquet stores all as UTF-8); a timestamp's unit is not part of
    /// the promise, its time zone is.
    pub fn accepts(&self, actual: &DataType) -> bool {
        match (self, actual) {
            (ContractType::String, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
                true
            }
            (ContractType::String, DataType::Dictionary(_, v)) => ContractType::String.accepts(v),
            (ContractType::TinyInt, DataType::Int8)
            | (ContractType::SmallInt, DataType::Int16)
            | (ContractType::Int, DataType::Int32)
            | (ContractType::BigInt, DataType::Int64)
            | (ContractType::UBigInt, DataType::UInt64)
            | (ContractType::Float, DataType::Float32)
            | (ContractType::Double, DataType::Float64)
            | (ContractType::Boolean, DataType::Boolean)
            | (ContractType::Date, DataType::Date32) => true,
            (ContractType::Timestamp, DataType::Timestamp(_, None)) => true,
            (ContractType::TimestampTz, DataType::Timestamp(_, Some(_))) => true,
            (
                ContractType::Decimal(p, s),
                DataType::Decimal128(ap, as_) | DataType::Decimal256(ap, as_),
            ) => p == ap && s == as_,
            _ => false,
        }
    }

    /// The contract type an Arrow type is written as, if it has one.
    pub fn of(actual: &DataType) -> Option<Self> {
        Some(match actual {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ContractType::String,
            DataType::Dictionary(_, v) => return Self::of(v),
            DataType::Int8 => ContractType::TinyInt,
            DataType::Int16 => ContractType::SmallInt,
            DataType::Int32 => ContractType::Int,
            DataType::Int64 => ContractType::BigInt,
            DataType::UInt64 => ContractType::UBigInt,
            DataType::Float32 => ContractType::Float,
            DataType::Float64 => ContractType::Double,
            DataType::Boolean => ContractType::Boolean,
            DataType::Date32 => ContractType::Date,
            DataType::Timestamp(_, None) => ContractType::Timestamp,
            DataType::Timestamp(_, Some(_)) => ContractType::TimestampTz,
            DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
                ContractType::Decimal(*p, *s)
            }
            _ => return None,
        })
    }
}

impl fmt::Display for ContractType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContractType::String => f.write_str("string"),
            ContractType::TinyInt => f.write_str("tinyint"),
            ContractType::SmallInt => f.write_str("smallint"),
            ContractType::Int => f.write_str("int"),
            ContractType::BigInt => f.write_str("bigint"),
            ContractType::UBigInt => f.write_str("ubigint"),
            ContractType::Float => f.write_str("float"),
            ContractType::Double => f.write_str("double"),
            ContractType::Boolean => f.write_str("boolean"),
            ContractType::Date => f.write_str("date"),
            ContractType::Timestamp => f.write_str("timestamp"),
            ContractType::TimestampTz => f.write_str("timestamptz"),
            ContractType::Decimal(p, s) => write!(f, "decimal({p},{s})"),
        }
    }
}

impl ContractType {
    /// The Arrow type a table of this contract is planned with when its step cannot say
    /// (a built-in step that does not run on the empty inputs of `validate`).
    pub fn arrow(&self) -> DataType {
        use datafusion::arrow::datatypes::TimeUnit;
        match self {
            ContractType::String => DataType::Utf8,
            ContractType::TinyInt => DataType::Int8,
            ContractType::SmallInt => DataType::Int16,
            ContractType::Int => DataType::Int32,
            ContractType::BigInt => DataType::Int64,
            ContractType::UBigInt => DataType::UInt64,
            ContractType::Float => DataType::Float32,
            ContractType::Double => DataType::Float64,
            ContractType::Boolean => DataType::Boolean,
            ContractType::Date => DataType::Date32,
            ContractType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ContractType::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            ContractType::Decimal(p, s) => DataType::Decimal128(*p, *s),
        }
    }
}

/// The schema a contract promises, when every column declares its type.
pub fn contract_schema(spec: &MartSpec) -> Option<Schema> {
    if !spec.contract {
        return None;
    }
    let fields: Option<Vec<datafusion::arrow::datatypes::Field>> = spec
        .columns
        .iter()
        .map(|c| {
            c.data_type
                .as_ref()
                .map(|t| datafusion::arrow::datatypes::Field::new(&c.name, t.arrow(), true))
        })
        .collect();
    fields.map(Schema::new)
}

/// How a column of type `actual` reads in a message: its contract name, else Arrow's.
pub fn type_name(actual: &DataType) -> String {
    ContractType::of(actual)
        .map(|t| t.to_string())
        .unwrap_or_else(|| actual.to_string())
}

/// One way a table breaks its contract, at the YAML line of the column when it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub at: Option<(usize, usize)>,
    pub message: String,
}

/// Every way `schema` breaks the contract of `spec` (nothing when it has none).
pub fn violations(table: &str, spec: &MartSpec, schema: &Schema) -> Vec<Violation> {
    if !spec.contract {
        return Vec::new();
    }
    let mut out = Vec::new();
    for col in &spec.columns {
        let Some(promised) = &col.data_type else {
            continue;
        };
        match schema.field_with_name(&col.name) {
            Err(_) => out.push(Violation {
                at: col.at,
                message: format!(
                    "contract of `{table}`: column `{}` ({promised}) is not produced by the model",
                    col.name
                ),
            }),
            Ok(field) if !promised.accepts(field.data_type()) => out.push(Violation {
                at: col.at,
                message: format!(
                    "contract of `{table}`: column `{}` is {}, the contract says {promised}",
                    col.name,
                    type_name(field.data_type())
                ),
            }),
            Ok(_) => {}
        }
    }
    for field in schema.fields() {
        if !spec.columns.iter().any(|c| &c.name == field.name()) {
            out.push(Violation {
                at: None,
                message: format!(
                    "contract of `{table}`: the model produces column `{}` ({}), which the contract does not declare",
                    field.name(),
                    type_name(field.data_type())
                ),
            });
        }
    }
    out
}

/// What a reader of the published version would lose if `planned` replaced it: columns
/// gone and columns whose type changed. An added column breaks no reader.
/// Each comes with the column it is about.
pub fn breaking_changes(
    table: &str,
    published: &Schema,
    planned: &Schema,
    skip: &[String],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for field in published.fields() {
        if skip.contains(field.name()) {
            continue;
        }
        match planned.field_with_name(field.name()) {
            Err(_) => out.push((
                field.name().clone(),
                format!(
                    "breaking change to `{table}`: column `{}` ({}) of the published version is gone",
                    field.name(),
                    type_name(field.data_type())
                ),
            )),
            Ok(now) => {
                let (was, is) = (type_name(field.data_type()), type_name(now.data_type()));
                if was != is {
                    out.push((
                        field.name().clone(),
                        format!("breaking change to `{table}`: column `{}` was {was} in the published version, is now {is}", field.name()),
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, TimeUnit};

    #[test]
    fn type_names_parse_and_match() {
        assert_eq!(
            ContractType::parse("VARCHAR").unwrap(),
            ContractType::String
        );
        assert_eq!(
            ContractType::parse("decimal(12, 2)").unwrap(),
            ContractType::Decimal(12, 2)
        );
        assert_eq!(
            ContractType::parse("timestamp with time zone").unwrap(),
            ContractType::TimestampTz
        );
        assert!(ContractType::parse("decimal(2,3)").is_err());
        let err = ContractType::parse("strin").unwrap_err();
        assert!(
            err.contains("unknown type `strin`") && err.contains("bigint"),
            "{err}"
        );
        assert!(ContractType::String.accepts(&DataType::Utf8View));
        assert!(!ContractType::BigInt.accepts(&DataType::Int32));
        assert!(ContractType::Timestamp.accepts(&DataType::Timestamp(TimeUnit::Microsecond, None)));
        assert!(!ContractType::Timestamp.accepts(&DataType::Timestamp(
            TimeUnit::Microsecond,
            Some("UTC".into())
        )));
        assert!(!ContractType::Decimal(12, 2).accepts(&DataType::Decimal128(12, 3)));
    }

    #[test]
    fn a_gone_or_retyped_column_is_a_breaking_change_and_a_new_one_is_not() {
        let published = Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("n", DataType::Int64, true),
            Field::new("old", DataType::Float64, true),
        ]);
        let planned = Schema::new(vec![
            Field::new("k", DataType::Utf8View, false),
            Field::new("n", DataType::Float64, true),
            Field::new("new", DataType::Float64, true),
        ]);
        let changes: Vec<String> = breaking_changes("m", &published, &planned, &[])
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            changes,
            vec![
                "breaking change to `m`: column `n` was bigint in the published version, is now double".to_string(),
                "breaking change to `m`: column `old` (double) of the published version is gone".to_string(),
            ]
        );
    }
}
