// placeholder until the generator lands
pub struct GenerateOptions { pub customers: u64, pub seed: u64, pub as_of: chrono::NaiveDate, pub years: u32, pub orders_per_customer: f64, pub bad_row_rate: f64 }
impl Default for GenerateOptions { fn default() -> Self { Self { customers: 1000, seed: 42, as_of: chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap(), years: 3, orders_per_customer: 6.0, bad_row_rate: 0.001 } } }
pub struct GeneratedFile { pub path: String, pub rows: u64, pub bad_rows: u64 }
pub struct GenerateSummary { pub files: Vec<GeneratedFile> }
pub fn generate(_opts: &GenerateOptions, _out_dir: &std::path::Path, _progress: &mut dyn FnMut(u64)) -> std::io::Result<GenerateSummary> { Err(std::io::Error::other("placeholder")) }
