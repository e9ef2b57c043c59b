#![cfg(feature = "host")]
//! One table of results.md: named columns, each with the unit its cells are
//! in, and rows of typed cells. The unit decides how a figure is printed, so
//! every table prints a duration, a size or a ratio the same way. A table
//! renders to Markdown and serialises to JSON (`tables` in results.json).

use crate::stats::Summary;
use serde::Serialize;

/// What a column's figures are in, and so how they print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    #[serde(rename = "text")]
    Text,
    /// Milliseconds: [`fmt_ms`], summaries as `median (min–max)`.
    #[serde(rename = "ms")]
    Ms,
    /// Seconds, to the millisecond.
    #[serde(rename = "s")]
    Seconds,
    /// Bytes, printed in KiB rounded up.
    #[serde(rename = "bytes")]
    Bytes,
    /// KiB, printed like milliseconds.
    #[serde(rename = "KiB")]
    KiB,
    #[serde(rename = "GiB/s")]
    GibPerS,
    #[serde(rename = "MiB/s")]
    MibPerS,
    /// A ratio, printed `0.94×`.
    #[serde(rename = "ratio")]
    Times,
    #[serde(rename = "%")]
    Percent,
}

impl Unit {
    fn number(self, x: f64) -> String {
        match self {
            Unit::Text | Unit::Ms | Unit::KiB => fmt_ms(x),
            Unit::Seconds => format!("{x:.3}"),
            Unit::Bytes => fmt_kib(x as u64),
            Unit::GibPerS => format!("{x:.2}"),
            Unit::MibPerS => format!("{x:.1}"),
            Unit::Times => format!("{x:.2}×"),
            Unit::Percent => format!("{x:.0}%"),
        }
    }

    /// `median (min–max)`.
    pub fn summary(self, s: &Summary) -> String {
        format!(
            "{} ({}–{})",
            self.number(s.median),
            self.number(s.min),
            self.number(s.max)
        )
    }
}

/// Serialised as its value: text, a number, a summary, or null.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Cell {
    Text(String),
    /// Text printed bold in Markdown.
    Strong(String),
    Num(f64),
    Summary(Summary),
    /// Not measured: `—`.
    Missing,
    /// Nothing at all, for the rest of a row that says why it has no figures.
    Blank,
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::Text(s.to_string())
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::Text(s)
    }
}

impl From<Option<Summary>> for Cell {
    fn from(s: Option<Summary>) -> Cell {
        s.map_or(Cell::Missing, Cell::Summary)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Column {
    pub title: String,
    pub unit: Unit,
    /// Every figure in it printed bold (the column the table is about).
    #[serde(skip)]
    pub bold: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(columns: &[(&str, Unit)]) -> Table {
        let columns = columns.iter().map(|&(t, unit)| Column {
            title: t.into(),
            unit,
            bold: false,
        });
        Table {
            columns: columns.collect(),
            rows: Vec::new(),
        }
    }

    /// Prints the figures of the column titled `title` in bold.
    pub fn bold(mut self, title: &str) -> Table {
        self.columns
            .iter_mut()
            .filter(|c| c.title == title)
            .for_each(|c| c.bold = true);
        self
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub fn markdown(&self) -> String {
        let line = |cells: Vec<String>| cells.iter().fold("|".to_string(), |l, c| format!("{l}{c}|"));
        let mut out = vec![
            line(self.columns.iter().map(|c| format!(" {} ", c.title)).collect()),
            line(self.columns.iter().map(|_| "---".into()).collect()),
        ];
        for row in &self.rows {
            out.push(line(
                row.iter().zip(&self.columns).map(|(cell, c)| text(cell, c)).collect(),
            ));
        }
        out.join("\n")
    }
}

/// A cell as it stands between two `|`, spaces included.
fn text(cell: &Cell, column: &Column) -> String {
    let u = column.unit;
    let s = match cell {
        Cell::Blank => return " ".into(),
        Cell::Text(s) => s.clone(),
        Cell::Strong(s) => format!("**{s}**"),
        Cell::Num(x) => u.number(*x),
        Cell::Summary(s) => u.summary(s),
        Cell::Missing => "—".into(),
    };
    match column.bold && matches!(cell, Cell::Num(_) | Cell::Summary(_)) {
        true => format!(" **{s}** "),
        false => format!(" {s} "),
    }
}

/// A duration in ms as the tables show it.
pub fn fmt_ms(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// `median (min–max)`, in ms.
pub fn fmt_summary(s: &Summary) -> String {
    Unit::Ms.summary(s)
}

pub fn fmt_kib(bytes: u64) -> String {
    format!("{} KiB", bytes.div_ceil(1024))
}

pub fn fmt_mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        let cases: &[(f64, &str)] = &[
            (0.04, "0.0"),
            (1.25, "1.2"),
            (99.94, "99.9"),
            (100.0, "100"),
            (28401.9, "28402"),
        ];
        for (x, want) in cases {
            assert_eq!(fmt_ms(*x), *want, "{x}");
        }
        let s = Summary::of(&[1.0, 150.0, 2.0]).unwrap();
        assert_eq!(fmt_summary(&s), "2.0 (1.0–150)");
        assert_eq!(fmt_kib(1), "1 KiB");
        assert_eq!(fmt_kib(1024), "1 KiB");
        assert_eq!(fmt_kib(1025), "2 KiB");
        assert_eq!(fmt_mib(3 << 19), "1.5 MiB");
    }

    #[test]
    fn cells_print_in_their_column_unit() {
        let s = Summary::of(&[0.9, 0.955, 0.94]).unwrap();
        let mut t = Table::new(&[("Tool", Unit::Text), ("Seconds", Unit::Seconds), ("x", Unit::Times)]).bold("x");
        t.row(vec!["a".into(), Cell::Summary(s), Cell::Num(1.041)]);
        t.row(vec![Cell::Strong("b".into()), Cell::Missing, Cell::Blank]);
        t.row(vec!["".into(), Cell::Num(2.0), Cell::Text("-".into())]);
        let want = "| Tool | Seconds | x |\n|---|---|---|\n| a | 0.940 (0.900–0.955) | **1.04×** |\n| **b** | — | |\n|  | 2.000 | - |";
        assert_eq!(t.markdown(), want);
        let j = serde_json::to_value(&t).unwrap();
        assert_eq!(j["columns"][1], serde_json::json!({"title": "Seconds", "unit": "s"}));
        assert_eq!(j["rows"][0][1]["median"], 0.94);
        assert_eq!(j["rows"][1], serde_json::json!(["b", null, null]));
        assert_eq!(Table::new(&[("Step", Unit::Text)]).markdown(), "| Step |\n|---|");
    }
}
