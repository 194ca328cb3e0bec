//! Finding a report's header row below any preamble, and mapping its columns to the schema's
//! fields ([`Layout`]).
//!
//! Guarantees: the header is the first row holding every required column; a report without
//! one fails with the missing columns and the headers found. Matching a header and naming
//! the columns the schema does not know take time linear in the number of columns, however
//! often one name repeats.

use std::collections::{HashMap, HashSet};

use anyhow::Result;

use super::cell::Cell;
use super::schema::{self, Schema, normalize_header};

/// Where the schema's fields sit in a report.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Column index of each schema field, in schema order.
    pub(crate) field_columns: Vec<Option<usize>>,
    /// Columns the schema does not name: (column index, a unique name for its values).
    pub(crate) extras: Vec<(usize, String)>,
    /// Header text of every column, for messages.
    pub(crate) headers: Vec<String>,
    /// Each header normalised (see [`normalize_header`]): a repeated header row is told by it.
    pub(crate) normalized: Vec<String>,
    /// Columns with an empty header (their values have no name to be kept under).
    pub(crate) unnamed: Vec<usize>,
    pub(crate) id_field: usize,
    pub(crate) state_field: usize,
    pub(crate) updated_field: Option<usize>,
    pub(crate) itsm_field: Option<usize>,
}

impl Layout {
    pub(crate) fn id_column(&self) -> usize {
        self.field_columns[self.id_field].expect("a required column")
    }

    pub(crate) fn state_column(&self) -> usize {
        self.field_columns[self.state_field].expect("a required column")
    }

    /// The header of column `col`, for messages.
    pub(crate) fn header(&self, col: usize) -> String {
        self.headers.get(col).cloned().unwrap_or_default()
    }

    /// The names of the extra columns, in the order of their values.
    pub(crate) fn extra_names(&self) -> Vec<String> {
        self.extras.iter().map(|(_, h)| h.clone()).collect()
    }
}

/// The text of a cell read as a header (or for a message).
pub(crate) fn header_text(c: &Cell<'_>) -> String {
    match c {
        Cell::Text(t) => t.to_string(),
        Cell::Empty | Cell::Uncomputed => String::new(),
        Cell::Number(f) | Cell::DateSerial(f) => format!("{f}"),
        Cell::Bool(b) => b.to_string(),
        Cell::Error(e) => e.to_string(),
    }
}

/// The search for the header row, one row at a time from the top of the report.
pub(crate) struct HeaderSearch<'s> {
    schema: &'s Schema,
    rows_seen: usize,
    /// The row with the most field matches seen so far: (matches, its headers).
    best: Option<(usize, Vec<String>)>,
}

impl<'s> HeaderSearch<'s> {
    pub(crate) fn new(schema: &'s Schema) -> Self {
        HeaderSearch {
            schema,
            rows_seen: 0,
            best: None,
        }
    }

    /// Looks at the next row: its layout when it is the header, `None` when the search
    /// goes on. Fails when two columns name one field the same way, or when the schema's
    /// `header_search_rows` rows held no header.
    pub(crate) fn row(&mut self, cells: &[Cell<'_>]) -> Result<Option<Layout>> {
        self.rows_seen += 1;
        let headers: Vec<String> = cells.iter().map(header_text).collect();
        let normalized: Vec<String> = headers.iter().map(|h| normalize_header(h)).collect();
        let matched = self.match_fields(&normalized);
        let has_required = self
            .schema
            .fields
            .iter()
            .zip(&matched.field_columns)
            .all(|(f, c)| !f.required || c.is_some());
        if has_required {
            return self.layout(headers, normalized, matched).map(Some);
        }
        let count = matched.field_columns.iter().flatten().count();
        if headers.iter().any(|h| !h.trim().is_empty())
            && self.best.as_ref().is_none_or(|(m, _)| count > *m)
        {
            self.best = Some((count, headers));
        }
        if self.rows_seen >= self.schema.header_search_rows {
            return Err(self.missing_columns_error().context(format!(
                "no header row in the first {} rows",
                self.schema.header_search_rows
            )));
        }
        Ok(None)
    }

    /// Which column holds each field. Two columns naming one field: the one matching the
    /// earlier alias in the schema's list holds it (the schema says which it prefers) and
    /// the other is kept as an extra; the same alias twice is ambiguous.
    fn match_fields(&self, normalized: &[String]) -> Matched {
        let n = self.schema.fields.len();
        let mut m = Matched {
            field_columns: vec![None; n],
            rank: vec![usize::MAX; n],
            ambiguous: Vec::new(),
            outranked: Vec::new(),
        };
        for (col, norm) in normalized.iter().enumerate() {
            let Some((f, r)) = self.schema.alias_for_header(norm) else {
                continue;
            };
            match m.field_columns[f] {
                None => {
                    m.field_columns[f] = Some(col);
                    m.rank[f] = r;
                }
                Some(first) if r == m.rank[f] => m.ambiguous.push((f, first, col)),
                Some(first) if r < m.rank[f] => {
                    m.field_columns[f] = Some(col);
                    m.rank[f] = r;
                    m.outranked.push((f, first));
                }
                Some(_) => m.outranked.push((f, col)),
            }
        }
        m
    }

    /// The layout of the header row `headers`, which holds every required column.
    fn layout(
        &self,
        headers: Vec<String>,
        normalized: Vec<String>,
        matched: Matched,
    ) -> Result<Layout> {
        let schema = self.schema;
        if let Some(&(f, first, second)) = matched.ambiguous.first() {
            anyhow::bail!(
                "the columns {:?} (column {}) and {:?} (column {}) both name the field {}: \
                 which one holds it is not guessed; rename one of them",
                headers[first].trim(),
                first + 1,
                headers[second].trim(),
                second + 1,
                schema.fields[f].name,
            );
        }
        let mut is_field = vec![false; headers.len()];
        for col in matched.field_columns.iter().flatten() {
            is_field[*col] = true;
        }
        for &(f, col) in &matched.outranked {
            tracing::warn!(
                column = %headers[col].trim(),
                field = %schema.fields[f].name,
                "another column matches an earlier alias of this field: this one is kept as an extra"
            );
        }
        // Every column that holds no field is an extra, but for one with no header at all.
        let mut extras = Vec::new();
        let mut unnamed = Vec::new();
        for col in (0..headers.len()).filter(|&c| !is_field[c]) {
            if normalized[col].is_empty() && headers[col].trim().is_empty() {
                unnamed.push(col);
            } else {
                extras.push((col, headers[col].trim().to_string()));
            }
        }
        name_uniquely(&mut extras, schema.fields.iter().map(|f| f.name.clone()));
        let pos = |n: &str| schema.field_index(n);
        Ok(Layout {
            id_field: pos(schema::ACTIVITY_ID).expect("schema checked"),
            state_field: pos(schema::STATE).expect("schema checked"),
            updated_field: pos(schema::UPDATED_AT),
            itsm_field: pos(schema::ITSM_NUMBER),
            field_columns: matched.field_columns,
            extras,
            unnamed,
            headers: headers.iter().map(|h| h.trim().to_string()).collect(),
            normalized,
        })
    }

    /// Why no header was found: the report is empty, names no column of the schema, or
    /// lacks required ones (named, with the headers of the row that came closest).
    pub(crate) fn missing_columns_error(&self) -> anyhow::Error {
        let schema = self.schema;
        let required = schema.fields.iter().filter(|f| f.required);
        match &self.best {
            None => anyhow::anyhow!(
                "the report holds no rows at all (empty file?); expected a header with the \
                 columns {}",
                required
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            // Not one cell names a column of the schema: the best candidate is a data row
            // (a report without its header), and its values stay out of the message.
            Some((0, _)) => anyhow::anyhow!(
                "no header row found: no row names a column of the schema; expected a header \
                 with {}. If the report's columns have other names, add them as aliases in the \
                 report schema",
                required
                    .map(|f| format!("{:?} ({})", f.example, f.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some((_, headers)) => {
                let found: HashSet<String> = headers.iter().map(|h| normalize_header(h)).collect();
                let missing: Vec<String> = required
                    .filter(|f| !f.aliases.iter().any(|a| found.contains(a)))
                    .map(|f| format!("{} (e.g. {:?})", f.name, f.example))
                    .collect();
                let shown: Vec<&str> = headers
                    .iter()
                    .map(String::as_str)
                    .filter(|h| !h.trim().is_empty())
                    .collect();
                anyhow::anyhow!(
                    "missing required column(s): {}; headers found: [{}]. Add the columns to the \
                     report or their names as aliases in the report schema",
                    missing.join(", "),
                    shown.join(", ")
                )
            }
        }
    }
}

/// The fields a header row names (see [`HeaderSearch::match_fields`]).
struct Matched {
    field_columns: Vec<Option<usize>>,
    /// The place in its field's alias list of the alias each field matched.
    rank: Vec<usize>,
    /// (field, first column, second column) matching one field with the same alias rank.
    ambiguous: Vec<(usize, usize, usize)>,
    /// (field, column) of columns that lost their field to a column with an earlier alias.
    outranked: Vec<(usize, usize)>,
}

/// Names the extra columns uniquely, apart from `taken`: an empty header becomes
/// "column N", a repeated one gets " (2)", " (3)"... Linear in the number of columns: each
/// name remembers the last number it was given.
fn name_uniquely(extras: &mut [(usize, String)], taken: impl Iterator<Item = String>) {
    let mut seen: HashSet<String> = taken.collect();
    let mut next: HashMap<String, usize> = HashMap::new();
    for (col, name) in extras.iter_mut() {
        if name.is_empty() {
            *name = format!("column {}", *col + 1);
        }
        if seen.insert(name.clone()) {
            continue;
        }
        let n = next.entry(name.clone()).or_insert(2);
        let mut candidate = format!("{name} ({n})");
        while !seen.insert(candidate.clone()) {
            *n += 1;
            candidate = format!("{name} ({n})");
        }
        *n += 1;
        *name = candidate;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        let mut extras: Vec<(usize, String)> = list
            .iter()
            .enumerate()
            .map(|(i, n)| (i, n.to_string()))
            .collect();
        name_uniquely(&mut extras, ["state".to_string()].into_iter());
        extras.into_iter().map(|(_, n)| n).collect()
    }

    #[test]
    fn extra_columns_are_named_uniquely() {
        assert_eq!(
            names(&["Note", "Note", "", "Note (2)", "Note", "state"]),
            [
                "Note",
                "Note (2)",
                "column 3",
                "Note (2) (2)",
                "Note (3)",
                "state (2)"
            ]
        );
    }

    #[test]
    fn naming_many_repeats_of_one_name_stays_linear() {
        let list = vec!["X"; 50_000];
        let got = names(&list);
        assert_eq!(got[0], "X");
        assert_eq!(got[49_999], "X (50000)");
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), 50_000);
    }
}
