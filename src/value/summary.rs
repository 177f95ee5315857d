//! Transaction log → per-customer recency/frequency/monetary summary.

use std::collections::BTreeMap;

use super::Summary;

/// Summary of one customer produced by [`summarise`].
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerSummary<K> {
    pub customer: K,
    /// Day number of the first purchase.
    pub first_day: i64,
    pub summary: Summary,
    /// Mean value of the repeat purchase days (amounts of the same day
    /// summed; the first day excluded); 0 when `frequency = 0`. This is the
    /// `m̄` of the Gamma-Gamma model and the `monetary_value` of `lifetimes`.
    pub monetary: f64,
}

/// Builds the calibration-period summary from `(customer, day_number, amount)`
/// transactions.
///
/// Transactions after `end_day` are ignored. Purchases on the same day are
/// merged (amounts summed) — the models count purchase *occasions*. Per
/// customer: `frequency` = distinct purchase days − 1, `recency` = (last day −
/// first day) / `days_per_unit`, `T` = (`end_day` − first day) /
/// `days_per_unit`, with fractional units (use 7.0 for weeks). Output is
/// sorted by customer. Customers whose first purchase is after `end_day` do
/// not appear.
pub fn summarise<K, I>(transactions: I, end_day: i64, days_per_unit: f64) -> Vec<CustomerSummary<K>>
where
    K: Ord + Clone,
    I: IntoIterator<Item = (K, i64, f64)>,
{
    let mut by_customer: BTreeMap<K, BTreeMap<i64, f64>> = BTreeMap::new();
    for (customer, day, amount) in transactions {
        if day <= end_day {
            *by_customer
                .entry(customer)
                .or_default()
                .entry(day)
                .or_insert(0.0) += amount;
        }
    }
    by_customer
        .into_iter()
        .filter_map(|(customer, days)| {
            let (&first, _) = days.iter().next()?;
            let (&last, _) = days.iter().next_back()?;
            let x = days.len() - 1;
            let monetary = if x == 0 {
                0.0
            } else {
                days.values().skip(1).sum::<f64>() / x as f64
            };
            Some(CustomerSummary {
                customer,
                first_day: first,
                summary: Summary {
                    frequency: x as f64,
                    recency: (last - first) as f64 / days_per_unit,
                    t: (end_day - first) as f64 / days_per_unit,
                },
                monetary,
            })
        })
        .collect()
}
