//! Output plumbing: buffered CSV and NDJSON writers that count rows, and the
//! calendar helpers (day numbers, RFC 3339 rendering, Copenhagen offsets).
//!
//! Dates are `i32` day numbers (days from 0001-01-01, chrono's CE count) and
//! instants are `i64` seconds on that same scale, so arithmetic is plain
//! integer math and saturates instead of panicking for extreme options.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

const BUF_BYTES: usize = 256 * 1024;

/// Opens `root/rel` for writing, creating the parent folder.
fn create(root: &Path, rel: &str) -> io::Result<BufWriter<File>> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    Ok(BufWriter::with_capacity(BUF_BYTES, File::create(path)?))
}

/// A CSV file written field by field without per-row allocation.
pub(crate) struct CsvOut {
    pub(crate) rel: &'static str,
    w: BufWriter<File>,
    delim: u8,
    at_row_start: bool,
    pub(crate) rows: u64,
    pub(crate) bad_rows: u64,
}

impl CsvOut {
    pub(crate) fn create(
        root: &Path,
        rel: &'static str,
        delim: u8,
        header: &[&str],
    ) -> io::Result<Self> {
        let mut out = CsvOut {
            rel,
            w: create(root, rel)?,
            delim,
            at_row_start: true,
            rows: 0,
            bad_rows: 0,
        };
        for h in header {
            out.text(h)?;
        }
        out.w.write_all(b"\n")?;
        out.at_row_start = true;
        Ok(out)
    }

    fn sep(&mut self) -> io::Result<()> {
        if !self.at_row_start {
            self.w.write_all(&[self.delim])?;
        }
        self.at_row_start = false;
        Ok(())
    }

    /// A free-text field, quoted only when it contains the delimiter, a quote or a line break.
    pub(crate) fn text(&mut self, s: &str) -> io::Result<()> {
        self.sep()?;
        let d = self.delim;
        if s.bytes()
            .any(|b| b == d || b == b'"' || b == b'\n' || b == b'\r')
        {
            self.w.write_all(b"\"")?;
            for (i, part) in s.split('"').enumerate() {
                if i > 0 {
                    self.w.write_all(b"\"\"")?;
                }
                self.w.write_all(part.as_bytes())?;
            }
            self.w.write_all(b"\"")
        } else {
            self.w.write_all(s.as_bytes())
        }
    }

    /// An optional text field; `None` is an empty cell.
    pub(crate) fn opt(&mut self, s: Option<&str>) -> io::Result<()> {
        self.text(s.unwrap_or(""))
    }

    /// A field the caller knows needs no quoting (ids, numbers, dates).
    pub(crate) fn raw(&mut self, args: fmt::Arguments<'_>) -> io::Result<()> {
        self.sep()?;
        self.w.write_fmt(args)
    }

    pub(crate) fn date(&mut self, day: i32) -> io::Result<()> {
        self.sep()?;
        write_date(&mut self.w, day)
    }

    /// `DD-MM-YYYY`, the other date style some ERP screens store.
    pub(crate) fn date_dmy(&mut self, day: i32) -> io::Result<()> {
        self.sep()?;
        write_date_dmy(&mut self.w, day)
    }

    /// Money in øre rendered as `123.45`.
    pub(crate) fn money(&mut self, ore: i64) -> io::Result<()> {
        self.sep()?;
        write_money(&mut self.w, ore)
    }

    pub(crate) fn end_row(&mut self, bad: bool) -> io::Result<()> {
        self.w.write_all(b"\n")?;
        self.at_row_start = true;
        self.rows += 1;
        self.bad_rows += u64::from(bad);
        Ok(())
    }

    pub(crate) fn finish(mut self) -> io::Result<super::GeneratedFile> {
        self.w.flush()?;
        Ok(super::GeneratedFile {
            path: self.rel.to_string(),
            rows: self.rows,
            bad_rows: self.bad_rows,
        })
    }
}

/// A newline-delimited JSON file.
pub(crate) struct JsonOut {
    rel: &'static str,
    w: BufWriter<File>,
    rows: u64,
}

impl JsonOut {
    pub(crate) fn create(root: &Path, rel: &'static str) -> io::Result<Self> {
        Ok(JsonOut {
            rel,
            w: create(root, rel)?,
            rows: 0,
        })
    }

    pub(crate) fn row<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.w, value)?;
        self.w.write_all(b"\n")?;
        self.rows += 1;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> io::Result<super::GeneratedFile> {
        self.w.flush()?;
        Ok(super::GeneratedFile {
            path: self.rel.to_string(),
            rows: self.rows,
            bad_rows: 0,
        })
    }
}

/// A JSON value that may be present, explicitly `null`, or left out of the object.
/// Real exports do both for missing data, so readers must cope with both.
#[derive(Clone, Copy)]
pub(crate) enum Field<'a> {
    Val(&'a str),
    Null,
    Absent,
}

impl Field<'_> {
    pub(crate) fn is_absent(&self) -> bool {
        matches!(self, Field::Absent)
    }
}

impl Serialize for Field<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Val(v) => s.serialize_str(v),
            _ => s.serialize_none(),
        }
    }
}

// ---------------------------------------------------------------------------
// Calendar helpers

pub(crate) const SECS_PER_DAY: i64 = 86_400;

fn min_day() -> i32 {
    NaiveDate::MIN.num_days_from_ce()
}

fn max_day() -> i32 {
    NaiveDate::MAX.num_days_from_ce()
}

pub(crate) fn day_of(date: NaiveDate) -> i32 {
    date.num_days_from_ce()
}

/// `day + n`, saturating at the ends of chrono's calendar.
pub(crate) fn add_days(day: i32, n: i64) -> i32 {
    (i64::from(day) + n).clamp(i64::from(min_day()), i64::from(max_day())) as i32
}

/// Calendar year of a day number, if chrono can represent it.
pub(crate) fn year_of(day: i32) -> Option<i32> {
    date_of(day).map(|d| d.year())
}

fn date_of(day: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(day)
}

fn write_date<W: Write + ?Sized>(w: &mut W, day: i32) -> io::Result<()> {
    match date_of(day) {
        Some(d) => write!(w, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day()),
        None => Ok(()),
    }
}

fn write_date_dmy<W: Write + ?Sized>(w: &mut W, day: i32) -> io::Result<()> {
    match date_of(day) {
        Some(d) => write!(w, "{:02}-{:02}-{:04}", d.day(), d.month(), d.year()),
        None => Ok(()),
    }
}

fn write_money<W: Write + ?Sized>(w: &mut W, ore: i64) -> io::Result<()> {
    let sign = if ore < 0 { "-" } else { "" };
    let a = ore.unsigned_abs();
    write!(w, "{sign}{}.{:02}", a / 100, a % 100)
}

/// Appends an ISO date to a String buffer.
pub(crate) fn push_date(buf: &mut String, day: i32) {
    use fmt::Write as _;
    if let Some(d) = date_of(day) {
        let _ = write!(buf, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
    }
}

/// Appends `YYYY-MM-DDTHH:MM:SS` (no offset) for an instant on the day-number scale.
fn push_local(buf: &mut String, t: i64) {
    use fmt::Write as _;
    let day = t.div_euclid(SECS_PER_DAY);
    let sod = t.rem_euclid(SECS_PER_DAY);
    let day = day.clamp(i64::from(min_day()), i64::from(max_day())) as i32;
    push_date(buf, day);
    let _ = write!(
        buf,
        "T{:02}:{:02}:{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
}

/// RFC 3339 in UTC: `2026-03-29T01:30:00Z`.
pub(crate) fn push_utc(buf: &mut String, t: i64) {
    push_local(buf, t);
    buf.push('Z');
}

/// RFC 3339 in Copenhagen wall-clock time with its offset of that instant.
pub(crate) fn push_copenhagen(buf: &mut String, t: i64) {
    let offset_h = copenhagen_offset_hours(t);
    push_local(buf, t + offset_h * 3600);
    buf.push_str(if offset_h == 2 { "+02:00" } else { "+01:00" });
}

/// The instant (seconds, UTC) of the last Sunday of `month` at 01:00 UTC:
/// when the EU switches between CET and CEST.
pub(crate) fn eu_switch(year: i32, month: u32) -> Option<i64> {
    let first_next = NaiveDate::from_ymd_opt(year, month + 1, 1)?;
    let last = first_next.pred_opt()?;
    let back = last.weekday().num_days_from_sunday();
    let sunday = i64::from(day_of(last)) - i64::from(back);
    Some(sunday * SECS_PER_DAY + 3600)
}

/// +2 during EU summer time (last Sunday of March to last Sunday of October,
/// both at 01:00 UTC), otherwise +1. chrono-tz is not a dependency and the EU
/// rule has been stable since 1996, which covers any realistic history.
pub(crate) fn copenhagen_offset_hours(t: i64) -> i64 {
    let day = t
        .div_euclid(SECS_PER_DAY)
        .clamp(i64::from(min_day()), i64::from(max_day())) as i32;
    let Some(year) = date_of(day).map(|d| d.year()) else {
        return 1;
    };
    match (eu_switch(year, 3), eu_switch(year, 10)) {
        (Some(start), Some(end)) if t >= start && t < end => 2,
        _ => 1,
    }
}
