//! What a scenario hands back and how it is shown: a JSON object with the
//! stable keys (`scenario`, `target`, then per-scenario figures) for
//! `--json`, and a two-column human table. With `--json` the JSON object is
//! the only thing on stdout and the table goes to stderr.

use std::io::Write;

use serde_json::Value;

pub struct Report {
    /// The per-scenario JSON object (without `scenario`/`target`).
    pub json: serde_json::Map<String, Value>,
    /// Human table rows, in order.
    pub rows: Vec<(String, String)>,
    /// At least one connection to the target was established.
    pub reached: bool,
}

impl Report {
    pub fn new() -> Report {
        Report {
            json: serde_json::Map::new(),
            rows: Vec::new(),
            reached: false,
        }
    }

    pub fn set(&mut self, key: &str, value: Value) {
        self.json.insert(key.to_string(), value);
    }

    pub fn row(&mut self, name: &str, value: impl Into<String>) {
        self.rows.push((name.to_string(), value.into()));
    }

    /// Prints the report: JSON on stdout (table on stderr) or the table on stdout.
    pub fn print(&self, scenario: &str, target: &str, json: bool) -> std::io::Result<()> {
        let table = self.table(scenario, target);
        if json {
            let mut obj = serde_json::Map::new();
            obj.insert("scenario".into(), Value::from(scenario));
            obj.insert("target".into(), Value::from(target));
            for (k, v) in &self.json {
                obj.insert(k.clone(), v.clone());
            }
            let text = serde_json::to_string(&Value::Object(obj))?;
            let _ = std::io::stderr().write_all(table.as_bytes());
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}")?;
            out.flush()
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(table.as_bytes())?;
            out.flush()
        }
    }

    fn table(&self, scenario: &str, target: &str) -> String {
        let width = self
            .rows
            .iter()
            .map(|(k, _)| k.len())
            .max()
            .unwrap_or(0)
            .max(8);
        let mut s = format!("metricstream-bench {scenario} -> {target}\n");
        for (k, v) in &self.rows {
            s.push_str(&format!("  {k:<width$}  {v}\n"));
        }
        s
    }
}

/// Formats a count per second with thousands separators for the table.
pub fn per_sec(v: f64) -> String {
    let whole = v.round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{out}/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands() {
        assert_eq!(per_sec(1234567.4), "1,234,567/s");
        assert_eq!(per_sec(12.0), "12/s");
    }
}
