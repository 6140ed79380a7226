//! Results: printed as tables while the run goes, collected as one JSON document for `--json`.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::machine;
use crate::stats::Sample;

pub struct Report {
    doc: Map<String, Value>,
    errors: u64,
    started: Instant,
}

impl Report {
    pub fn new() -> Report {
        let mut doc = Map::new();
        doc.insert("machine".into(), machine::info());
        doc.insert(
            "command".into(),
            Value::String(std::env::args().collect::<Vec<_>>().join(" ")),
        );
        Report {
            doc,
            errors: 0,
            started: Instant::now(),
        }
    }

    /// Appends `value` to the array `section`.
    pub fn push(&mut self, section: &str, value: Value) {
        let entry = self.doc.entry(section).or_insert_with(|| Value::Array(vec![]));
        if let Value::Array(a) = entry {
            a.push(value);
        }
    }

    /// Counts a measurement's failed requests and prints what they were.
    pub fn check(&mut self, what: &str, sample: &Sample) {
        if sample.errors > 0 {
            self.errors += sample.errors;
            eprintln!("!! {what}: {} requests failed, e.g.:", sample.errors);
            for e in &sample.error_examples {
                eprintln!("!!   {e}");
            }
        }
    }

    /// Counts failures found outside a measurement.
    pub fn fail(&mut self, what: &str, n: u64) {
        self.errors += n;
        eprintln!("!! {what}");
    }

    pub fn errors(&self) -> u64 {
        self.errors
    }

    pub fn finish(&mut self) {
        self.doc.insert(
            "finished".into(),
            json!({
                "seconds": self.started.elapsed().as_secs_f64(),
                "loadavg": machine::loadavg(),
                "failed_requests": self.errors,
            }),
        );
    }

    pub fn write_json(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(&self.doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// Prints a table with a title; columns after the first are right-aligned.
pub fn table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i == 0 {
                s += &format!("{cell:<w$}");
            } else {
                s += &format!("  {cell:>w$}");
            }
        }
        println!("{}", s.trim_end());
    };
    println!();
    println!("{title}");
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn ms(v: f64) -> String {
    format!("{v:.2}")
}

pub fn times(r: Option<f64>) -> String {
    match r {
        None => "-".into(),
        Some(r) if r >= 0.1 => format!("{r:.2}x"),
        Some(r) => format!("{r:.4}x"),
    }
}
