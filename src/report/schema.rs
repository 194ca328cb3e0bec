//! The report schema: which report columns carry which canonical Activity field.
//!
//! Column names never live in code: a schema file (TOML) lists, per canonical field, the
//! header aliases, the field type and whether it is required, plus the state aliases and
//! the accepted date formats. The bundled `schemas/tangoe-activity-report.toml` is compiled
//! in and used when a configuration names no schema.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use indexmap::IndexMap;
use serde::Deserialize;

use super::reading::Reading;
use crate::state::State;

/// The schema shipped with the tool, used when `[report] schema` is not set.
pub(crate) const BUNDLED: &str = include_str!("../../schemas/tangoe-activity-report.toml");

/// The schema of the Tangoe API's records, used by a `tangoe_api` source that names none.
pub(crate) const BUNDLED_API: &str = include_str!("../../schemas/tangoe-activity-api.toml");

/// The type of a report field: decides how a cell is normalised and validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FieldType {
    Text,
    Phone,
    Date,
    Datetime,
    Money,
    Email,
    Url,
}

impl FieldType {
    pub(crate) fn is_temporal(self) -> bool {
        matches!(self, FieldType::Date | FieldType::Datetime)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    #[serde(default)]
    required: bool,
    #[serde(rename = "type", default = "default_type")]
    kind: FieldType,
    aliases: Vec<String>,
}

fn default_type() -> FieldType {
    FieldType::Text
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReport {
    delimiter: Option<String>,
    sheet: Option<String>,
    #[serde(default)]
    date_formats: Vec<String>,
    #[serde(default)]
    datetime_formats: Vec<String>,
    /// How many rows from the top are searched for the header row.
    header_search_rows: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStates {
    #[serde(default)]
    ordered: Vec<String>,
    #[serde(default)]
    on_back_order: Vec<String>,
    #[serde(default)]
    completed: Vec<String>,
    #[serde(default)]
    cancelled: Vec<String>,
    #[serde(default)]
    ignore: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    #[serde(default)]
    report: RawReport,
    #[serde(default)]
    states: RawStates,
    fields: IndexMap<String, RawField>,
}

/// One canonical field of the schema.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) kind: FieldType,
    pub(crate) required: bool,
    /// Normalised aliases (see [`normalize_header`]).
    pub(crate) aliases: Vec<String>,
    /// The first alias as the schema writes it, for messages.
    pub(crate) example: String,
}

/// What a state cell means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateValue {
    Trigger(State),
    /// A known state that triggers nothing (pending approval, in progress...).
    Ignored,
}

/// A validated report schema.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    pub(crate) fields: Vec<Field>,
    pub(crate) delimiter: Option<u8>,
    pub(crate) sheet: Option<String>,
    pub(crate) date_formats: Vec<String>,
    pub(crate) datetime_formats: Vec<String>,
    pub(crate) header_search_rows: usize,
    /// How the report's bytes are read: set from the configuration's `[report]` (the
    /// schema file does not set it), carried here so that a reader gets it with the schema.
    pub(crate) reading: Reading,
    states: HashMap<String, StateValue>,
    /// Every normalised alias → (its field, its place in the field's list).
    headers: HashMap<String, (usize, usize)>,
}

/// Canonical fields the pipeline itself reads; a schema must define them.
pub(crate) const ACTIVITY_ID: &str = "activity_id";
pub(crate) const STATE: &str = "state";
pub(crate) const ITSM_NUMBER: &str = "itsm_number";
pub(crate) const UPDATED_AT: &str = "updated_at";

impl Schema {
    pub(crate) fn bundled() -> Result<Schema> {
        Schema::parse(BUNDLED, "the bundled schema")
    }

    pub(crate) fn bundled_api() -> Result<Schema> {
        Schema::parse(BUNDLED_API, "the bundled API schema")
    }

    pub(crate) fn load(path: &Path) -> Result<Schema> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read report schema {}", path.display()))?;
        Schema::parse(&text, &path.display().to_string())
    }

    pub(crate) fn parse(text: &str, origin: &str) -> Result<Schema> {
        let raw: RawSchema =
            toml::from_str(text).with_context(|| format!("invalid report schema in {origin}"))?;
        let mut fields: Vec<Field> = Vec::with_capacity(raw.fields.len());
        let mut headers: HashMap<String, (usize, usize)> = HashMap::new();
        for (name, f) in raw.fields {
            if f.aliases.is_empty() {
                bail!("report schema {origin}: field `{name}` has no aliases");
            }
            let aliases: Vec<String> = f.aliases.iter().map(|a| normalize_header(a)).collect();
            // A header may name one field only: which one it feeds is not guessed.
            for (rank, (alias, raw_alias)) in aliases.iter().zip(&f.aliases).enumerate() {
                match headers.get(alias) {
                    Some(&(other, _)) if other != fields.len() => bail!(
                        "report schema {origin}: the alias {raw_alias:?} is listed under both \
                         `{}` and `{name}`",
                        fields[other].name
                    ),
                    // The same alias twice in one field's list: its first place counts.
                    Some(_) => {}
                    None => {
                        headers.insert(alias.clone(), (fields.len(), rank));
                    }
                }
            }
            fields.push(Field {
                name,
                kind: f.kind,
                required: f.required,
                aliases,
                example: f.aliases[0].clone(),
            });
        }
        for needed in [ACTIVITY_ID, STATE] {
            match fields.iter().find(|f| f.name == needed) {
                None => bail!("report schema {origin}: the field `{needed}` is missing"),
                Some(f) if !f.required => {
                    bail!("report schema {origin}: the field `{needed}` must be required = true")
                }
                Some(_) => {}
            }
        }
        let delimiter = match raw.report.delimiter.as_deref() {
            None | Some("auto") | Some("") => None,
            Some("\\t") | Some("\t") | Some("tab") => Some(b'\t'),
            Some(d) if d.len() == 1 && d.is_ascii() => Some(d.as_bytes()[0]),
            Some(d) => bail!(
                "report schema {origin}: delimiter {d:?} must be \"auto\" or one ASCII character"
            ),
        };
        for f in raw
            .report
            .date_formats
            .iter()
            .chain(&raw.report.datetime_formats)
        {
            if chrono::format::StrftimeItems::new(f).parse().is_err() {
                bail!("report schema {origin}: date format {f:?} is not a valid strftime format");
            }
        }
        let mut states = HashMap::new();
        for s in State::ALL {
            states.insert(normalize_header(s.as_str()), StateValue::Trigger(s));
        }
        let lists = [
            (&raw.states.ordered, StateValue::Trigger(State::Ordered)),
            (
                &raw.states.on_back_order,
                StateValue::Trigger(State::OnBackOrder),
            ),
            (&raw.states.completed, StateValue::Trigger(State::Completed)),
            (&raw.states.cancelled, StateValue::Trigger(State::Cancelled)),
            (&raw.states.ignore, StateValue::Ignored),
        ];
        for (list, value) in lists {
            for alias in list {
                let key = normalize_header(alias);
                if let Some(old) = states.insert(key, value)
                    && old != value
                {
                    bail!("report schema {origin}: state alias {alias:?} is listed twice");
                }
            }
        }
        Ok(Schema {
            fields,
            delimiter,
            sheet: raw.report.sheet.filter(|s| !s.is_empty()),
            date_formats: raw.report.date_formats,
            datetime_formats: raw.report.datetime_formats,
            header_search_rows: raw.report.header_search_rows.unwrap_or(50),
            reading: Reading::default(),
            states,
            headers,
        })
    }

    pub(crate) fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The state a cell names, if the schema knows it (any case, spacing ignored).
    pub(crate) fn state(&self, cell: &str) -> Option<StateValue> {
        self.states.get(&normalize_header(cell)).copied()
    }

    /// Which field a header names, if any.
    #[cfg(test)]
    pub(crate) fn field_for_header(&self, normalized: &str) -> Option<usize> {
        self.alias_for_header(normalized).map(|(f, _)| f)
    }

    /// The field a header names, and the position of the alias it matched in that field's
    /// list (the earlier alias wins when two columns name one field).
    pub(crate) fn alias_for_header(&self, normalized: &str) -> Option<(usize, usize)> {
        if normalized.is_empty() {
            return None;
        }
        self.headers.get(normalized).copied()
    }
}

/// Normalises a header (or state) for matching: lower case, and only letters and digits
/// kept, so BOMs, non-breaking spaces, spaces, `_`, `-`, `/` and punctuation all vanish.
pub(crate) fn normalize_header(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_ignoring_case_punctuation_bom_and_nbsp() {
        let s = Schema::bundled().unwrap();
        let id = s.field_index("activity_id").unwrap();
        for h in [
            "Activity ID",
            "\u{feff}activity_id",
            "ACTIVITY-ID",
            "activity\u{a0}id",
            " Activity  Id ",
        ] {
            assert_eq!(s.field_for_header(&normalize_header(h)), Some(id), "{h:?}");
        }
        assert_eq!(
            s.field_for_header(&normalize_header("Favourite colour")),
            None
        );
    }

    #[test]
    fn state_aliases_any_case() {
        let s = Schema::bundled().unwrap();
        assert_eq!(
            s.state("On Back Order"),
            Some(StateValue::Trigger(State::OnBackOrder))
        );
        assert_eq!(
            s.state("BACKORDERED"),
            Some(StateValue::Trigger(State::OnBackOrder))
        );
        assert_eq!(
            s.state("on_back_order"),
            Some(StateValue::Trigger(State::OnBackOrder))
        );
        assert_eq!(
            s.state("Canceled"),
            Some(StateValue::Trigger(State::Cancelled))
        );
        assert_eq!(
            s.state("cancelled"),
            Some(StateValue::Trigger(State::Cancelled))
        );
        assert_eq!(s.state("In Progress"), Some(StateValue::Ignored));
        assert_eq!(s.state("Exploded"), None);
    }

    #[test]
    fn unknown_schema_keys_are_errors() {
        let err = Schema::parse(
            "[fields.activity_id]\nrequired=true\naliases=['a']\nalias=['x']",
            "t.toml",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("alias"), "{err:#}");
    }

    #[test]
    fn one_alias_under_two_fields_is_an_error() {
        let err = Schema::parse(
            "[fields.activity_id]\nrequired=true\naliases=['Activity ID', 'Ticket']\n\
             [fields.state]\nrequired=true\naliases=['Status']\n\
             [fields.itsm_number]\naliases=['ticket']",
            "t.toml",
        )
        .unwrap_err();
        assert!(
            format!("{err:#}")
                .contains("\"ticket\" is listed under both `activity_id` and `itsm_number`"),
            "{err:#}"
        );
    }
}
