#![cfg(feature = "host")]
//! Fills in bench/results.template.md. The template holds the layout and
//! the prose; the run supplies [`Figures`] by name, so a line whose figure
//! the run lacks (a part not run) drops out instead of needing a branch.

use crate::table::Table;
use std::collections::BTreeMap;

pub enum Value {
    Text(String),
    Table(Table),
}

/// One run's figures, under the names the template gives them.
#[derive(Default)]
pub struct Figures(BTreeMap<String, Value>);

impl Figures {
    pub fn set(&mut self, name: &str, value: impl ToString) {
        self.0.insert(name.into(), Value::Text(value.to_string()));
    }

    /// `{?name}`: prints nothing, and keeps its line only `when`.
    pub fn flag(&mut self, name: &str, when: bool) {
        if when {
            self.0.insert(format!("?{name}"), Value::Text(String::new()));
        }
    }

    pub fn table(&mut self, name: &str, table: Table) {
        self.0.insert(format!("table:{name}"), Value::Table(table));
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// A filled-in template, and its tables under the heading of their section.
pub struct Page<'a> {
    pub text: String,
    pub tables: BTreeMap<&'a str, Vec<&'a Table>>,
}

/// The template without the comment at its top, which says how it works.
fn body(template: &str) -> &str {
    template.split_once("-->\n").map_or(template, |(_, body)| body)
}

pub fn render<'a>(template: &'a str, figures: &'a Figures) -> Page<'a> {
    let (mut lines, mut tables, mut heading) = (Vec::<String>::new(), BTreeMap::new(), "");
    for line in body(template).lines() {
        let Some((text, used)) = fill(line, figures) else {
            continue;
        };
        // A heading behind a `{?name}` starts its section only when printed.
        if let Some(at) = line.find('#').filter(|_| text.starts_with('#')) {
            heading = line[at..].trim_start_matches('#').trim();
            tables.insert(heading, Vec::new());
        }
        if let Some(in_section) = tables.get_mut(heading) {
            in_section.extend(used);
        }
        if !(text.is_empty() && lines.last().is_none_or(String::is_empty)) {
            lines.push(text);
        }
    }
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    let text = lines.join("\n") + "\n";
    Page { text, tables }
}

/// `line` with its placeholders filled in, and the tables it printed;
/// `None` if it names a figure the run does not have.
fn fill<'a>(line: &str, figures: &'a Figures) -> Option<(String, Vec<&'a Table>)> {
    let (mut out, mut tables, mut rest) = (String::new(), Vec::new(), line);
    while let Some((before, after)) = rest.split_once('{') {
        let (name, after) = after.split_once('}')?;
        out += before;
        match figures.0.get(name)? {
            Value::Text(text) => out += text,
            Value::Table(table) => {
                out += &table.markdown();
                tables.push(table);
            }
        }
        rest = after;
    }
    Some((out + rest, tables))
}

/// Every name the template's placeholders use.
pub fn placeholders(template: &str) -> Vec<&str> {
    let after_each_brace = body(template).split('{').skip(1);
    after_each_brace.filter_map(|s| Some(s.split_once('}')?.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Unit;

    #[test]
    fn lines_without_their_figures_drop_out() {
        let mut f = Figures::default();
        f.set("x", 1.5);
        f.flag("yes", true);
        f.flag("no", false);
        f.table("t", Table::new(&[("T", Unit::Text)]));
        let template = "<!-- {how} -->\n# A\n\nx is {x}.\n\n{?no}gone\n\n{?yes}kept {missing}\n\n## B\n\n{table:t}\n\n";
        let page = render(template, &f);
        assert_eq!(page.text, "# A\n\nx is 1.5.\n\n## B\n\n| T |\n|---|\n");
        let tables: Vec<(&str, usize)> = page.tables.iter().map(|(h, t)| (*h, t.len())).collect();
        assert_eq!(tables, [("A", 0), ("B", 1)]);
        assert_eq!(placeholders(template), ["x", "?no", "?yes", "missing", "table:t"]);
    }
}
