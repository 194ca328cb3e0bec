//! The canonical event: how an event reads without a mapping, as a JSON object (one line
//! of an import file, or a webhook's body) or as a CSV record under a fixed header.
//! Shared by the file and HTTP sinks, so that both say the same thing of an event.
//!
//! Fields, in order: `event_id`, `activity_id`, `previous_state` (empty for a new
//! Activity), `state`, `itsm_number`, `updated_at` (RFC 3339, UTC), `report`, `row`, every
//! schema field by name (empty when the report lacked it), `kind` for re-sent events, and
//! `extra` (the columns the schema does not name).

use std::borrow::Cow;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::ledger::{Columns, EventView, StoredEvent};
use crate::state::State;
use crate::timestamp::rfc3339;

/// The top-level fields of the canonical event, before the attributes.
pub(crate) const CANONICAL: [&str; 8] = [
    "event_id",
    "activity_id",
    "previous_state",
    "state",
    "itsm_number",
    "updated_at",
    "report",
    "row",
];

/// The canonical event (used when a sink has no mapping): `event_id`, `activity_id`,
/// `previous_state`, `state`, `itsm_number`, `updated_at`, `report`, `row`, every schema
/// field by name (empty when the report lacked it), `kind` for re-sent events, and `extra`
/// (the columns the schema does not name).
pub(crate) struct Canonical<'a> {
    /// Everything but `row` and `extra`, in output order (`row` goes after `report`).
    pub(crate) fields: Vec<(&'a str, Cow<'a, str>)>,
    pub(crate) row: u64,
    pub(crate) extra: Vec<(&'a str, &'a str)>,
}

/// Where each schema field's value sits among a report's columns, and the JSON keys of the
/// canonical event (cached per report: an event's columns are shared by its report's events).
#[derive(Default)]
pub(crate) struct FieldMap {
    /// The columns this map was built for (held, so they cannot be freed and another
    /// report's take their place at the same address).
    key: Option<Arc<Columns>>,
    /// For each schema field not in [`CANONICAL`]: its index in the report's fields.
    positions: Vec<(usize, Option<usize>)>,
    /// The report's fields that neither [`CANONICAL`] nor the schema names (an older
    /// schema's fields): their indices.
    kept: Vec<usize>,
    /// `,"name":` for each of `positions`, then each of `kept`, then each extra column.
    json_keys: Vec<Vec<u8>>,
}

impl FieldMap {
    pub(crate) fn prepare(&mut self, columns: &Arc<Columns>, schema_fields: &[String]) {
        if self.key.as_ref().is_some_and(|k| Arc::ptr_eq(k, columns)) {
            return;
        }
        self.key = Some(columns.clone());
        let report_fields = &columns.fields;
        self.positions = schema_fields
            .iter()
            .enumerate()
            .filter(|(_, f)| !CANONICAL.contains(&f.as_str()))
            .map(|(i, f)| (i, report_fields.iter().position(|r| r == f)))
            .collect();
        self.kept = report_fields
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                !CANONICAL.contains(&r.as_str()) && !schema_fields.iter().any(|f| f == *r)
            })
            .map(|(i, _)| i)
            .collect();
        let key = |name: &str| {
            let mut k = b",".to_vec();
            json_str(&mut k, name);
            k.push(b':');
            k
        };
        self.json_keys = (self.positions.iter().map(|&(i, _)| &schema_fields[i]))
            .chain(self.kept.iter().map(|&i| &report_fields[i]))
            .chain(&columns.extras)
            .map(|n| key(n))
            .collect();
    }
}

/// Appends the canonical event (see [`Canonical`]) as one JSON object, straight from the
/// stored values with the keys `map` rendered for the event's report.
pub(crate) fn write_canonical_json(v: &EventView<'_>, map: &FieldMap, out: &mut Vec<u8>) {
    let value = |i: usize| v.values.get(i).copied();
    out.extend_from_slice(b"{\"event_id\":");
    json_str(out, v.key);
    out.extend_from_slice(b",\"activity_id\":");
    json_str(out, v.activity_id);
    out.extend_from_slice(b",\"previous_state\":");
    json_str(out, v.previous_state.map_or("", State::as_str));
    out.extend_from_slice(b",\"state\":");
    json_str(out, v.state.as_str());
    out.extend_from_slice(b",\"itsm_number\":");
    json_str(out, v.itsm_number);
    out.extend_from_slice(b",\"updated_at\":");
    json_str(out, &rfc3339(v.updated_at));
    out.extend_from_slice(b",\"report\":");
    json_str(out, v.report);
    out.extend_from_slice(b",\"row\":");
    out.extend_from_slice(v.row.to_string().as_bytes());
    let mut keys = map.json_keys.iter();
    for (&(_, pos), k) in map.positions.iter().zip(&mut keys) {
        out.extend_from_slice(k);
        json_str(out, pos.and_then(value).unwrap_or(""));
    }
    for (&i, k) in map.kept.iter().zip(&mut keys) {
        if let Some(x) = value(i) {
            out.extend_from_slice(k);
            json_str(out, x);
        }
    }
    if v.kind != "change" {
        out.extend_from_slice(b",\"kind\":");
        json_str(out, v.kind);
    }
    out.extend_from_slice(b",\"extra\":{");
    let n = v.fields.len();
    for (j, k) in keys.enumerate() {
        let Some(x) = value(n + j) else { break };
        out.extend_from_slice(if j == 0 { &k[1..] } else { k });
        json_str(out, x);
    }
    out.extend_from_slice(b"}}");
}

/// The fields of an event the canonical event names before its attributes.
struct Head<'a> {
    key: &'a str,
    activity_id: &'a str,
    previous_state: Option<State>,
    state: State,
    itsm_number: &'a str,
    updated_at: i64,
    report: &'a str,
    row: u64,
    kind: &'a str,
}

impl<'a> Canonical<'a> {
    /// `fields`: the event's report's fields, by name, with their values; `map` prepared for
    /// those fields.
    fn build(
        head: Head<'a>,
        fields: &[(&'a str, &'a str)],
        extra: Vec<(&'a str, &'a str)>,
        map: &FieldMap,
        schema_fields: &'a [String],
    ) -> Canonical<'a> {
        let mut out: Vec<(&'a str, Cow<'a, str>)> =
            Vec::with_capacity(CANONICAL.len() + schema_fields.len() + 1);
        out.push(("event_id", Cow::Borrowed(head.key)));
        out.push(("activity_id", Cow::Borrowed(head.activity_id)));
        out.push((
            "previous_state",
            Cow::Borrowed(head.previous_state.map_or("", State::as_str)),
        ));
        out.push(("state", Cow::Borrowed(head.state.as_str())));
        out.push(("itsm_number", Cow::Borrowed(head.itsm_number)));
        out.push(("updated_at", Cow::Owned(rfc3339(head.updated_at))));
        out.push(("report", Cow::Borrowed(head.report)));
        for &(i, pos) in &map.positions {
            let v = pos.and_then(|p| fields.get(p)).map_or("", |f| f.1);
            out.push((schema_fields[i].as_str(), Cow::Borrowed(v)));
        }
        // Fields an older schema had and the current one does not: kept, never dropped.
        for &(name, v) in map.kept.iter().filter_map(|&i| fields.get(i)) {
            out.push((name, Cow::Borrowed(v)));
        }
        if head.kind != "change" {
            out.push(("kind", Cow::Borrowed(head.kind)));
        }
        Canonical {
            fields: out,
            row: head.row,
            extra,
        }
    }

    /// `map` must be prepared for the event's columns.
    pub(crate) fn of_view(
        v: &'a EventView<'a>,
        map: &FieldMap,
        schema_fields: &'a [String],
    ) -> Canonical<'a> {
        let n = v.fields.len();
        let fields: Vec<(&str, &str)> = v
            .fields
            .iter()
            .map(String::as_str)
            .zip(v.values.iter().copied())
            .collect();
        let extra = v
            .extras
            .iter()
            .map(String::as_str)
            .zip(v.values.iter().skip(n).copied())
            .collect();
        let head = Head {
            key: v.key,
            activity_id: v.activity_id,
            previous_state: v.previous_state,
            state: v.state,
            itsm_number: v.itsm_number,
            updated_at: v.updated_at,
            report: v.report,
            row: v.row,
            kind: v.kind,
        };
        Canonical::build(head, &fields, extra, map, schema_fields)
    }

    pub(crate) fn of_stored(e: &'a StoredEvent, schema_fields: &'a [String]) -> Canonical<'a> {
        let fields: Vec<(&str, &str)> = e.attrs[..e.extra_from.min(e.attrs.len())]
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let columns = Arc::new(Columns {
            fields: fields.iter().map(|f| f.0.to_string()).collect(),
            extras: Vec::new(),
        });
        let mut map = FieldMap::default();
        map.prepare(&columns, schema_fields);
        let extra = e
            .attrs
            .iter()
            .skip(e.extra_from)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let head = Head {
            key: &e.key,
            activity_id: &e.activity_id,
            previous_state: e.previous_state,
            state: e.state,
            itsm_number: &e.itsm_number,
            updated_at: e.updated_at,
            report: &e.report,
            row: e.row,
            kind: &e.kind,
        };
        Canonical::build(head, &fields, extra, &map, schema_fields)
    }

    /// As one JSON object, appended to `out`: the reference [`write_canonical_json`] is
    /// checked against.
    #[cfg(test)]
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) -> anyhow::Result<()> {
        out.push(b'{');
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, k);
            out.push(b':');
            json_str(out, v);
            if *k == "report" {
                out.extend_from_slice(b",\"row\":");
                out.extend_from_slice(self.row.to_string().as_bytes());
            }
        }
        out.extend_from_slice(b",\"extra\":{");
        for (i, (k, v)) in self.extra.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(out, k);
            out.push(b':');
            json_str(out, v);
        }
        out.extend_from_slice(b"}}");
        Ok(())
    }

    /// As an ordered map (for request bodies).
    pub(crate) fn to_map(&self) -> IndexMap<String, Value> {
        let mut m = IndexMap::with_capacity(self.fields.len() + 2);
        for (k, v) in &self.fields {
            m.insert(k.to_string(), Value::from(v.as_ref()));
            if *k == "report" {
                m.insert("row".into(), Value::from(self.row));
            }
        }
        let extra: serde_json::Map<String, Value> = self
            .extra
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        m.insert("extra".into(), Value::Object(extra));
        m
    }

    /// The value of a CSV column named `h` (`extra` as a JSON object, empty when none).
    pub(crate) fn csv_cell(&self, h: &str) -> String {
        match h {
            "row" => self.row.to_string(),
            "extra" if self.extra.is_empty() => String::new(),
            "extra" => {
                let m: serde_json::Map<String, Value> = self
                    .extra
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::from(*v)))
                    .collect();
                Value::Object(m).to_string()
            }
            _ => self
                .fields
                .iter()
                .find(|(k, _)| *k == h)
                .map_or(String::new(), |(_, v)| v.to_string()),
        }
    }
}

/// The canonical event of a stored event, as an ordered map.
pub(crate) fn canonical(e: &StoredEvent, schema_fields: &[String]) -> IndexMap<String, Value> {
    Canonical::of_stored(e, schema_fields).to_map()
}

/// Whether no byte of `b` needs a JSON escape: 32 bytes at a time, without branches inside
/// a block (the compiler turns a block into a few vector instructions).
fn needs_no_escape(b: &[u8]) -> bool {
    let escapes = |acc: u8, &c: &u8| acc | u8::from((c < 0x20) | (c == b'"') | (c == b'\\'));
    let mut blocks = b.chunks_exact(32);
    for block in &mut blocks {
        if block.iter().fold(0u8, escapes) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().fold(0u8, escapes) == 0
}

/// Appends `s` as a JSON string, escaped exactly as `serde_json` does (the short escapes,
/// `\u00XX` for other control characters, nothing else). Most values need no escaping:
/// one pass without branches tells, and they are copied whole.
pub(crate) fn json_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.push(b'"');
    if needs_no_escape(b) {
        out.extend_from_slice(b);
    } else {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut start = 0;
        for (i, &c) in b.iter().enumerate() {
            let short: &[u8] = match c {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0..=0x1f => b"",
                _ => continue,
            };
            out.extend_from_slice(&b[start..i]);
            start = i + 1;
            if short.is_empty() {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
            } else {
                out.extend_from_slice(short);
            }
        }
        out.extend_from_slice(&b[start..]);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped_as_serde_json_does() {
        let mut every: String = (0u8..0x80).map(char::from).collect();
        every.push_str("Zoë \u{2028} €\"\\/");
        for s in [
            "",
            "plain",
            "line\nbreak",
            every.as_str(),
            "\u{7f}",
            "\"",
            "end\\",
        ] {
            let mut ours = Vec::new();
            json_str(&mut ours, s);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
        // One character to escape at every position of strings around the block size.
        for len in [1, 31, 32, 33, 64, 70] {
            for at in 0..len {
                for c in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
                    let s: String = (0..len).map(|i| if i == at { c } else { 'a' }).collect();
                    let mut ours = Vec::new();
                    json_str(&mut ours, &s);
                    assert_eq!(
                        String::from_utf8(ours).unwrap(),
                        serde_json::to_string(&s).unwrap(),
                        "{s:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_direct_json_line_equals_the_reference_rendering() {
        let schema: Vec<String> = [
            "activity_id",
            "state",
            "updated_at",
            "device",
            "line",
            "user",
        ]
        .map(String::from)
        .to_vec();
        // Report columns: all the schema's, some missing, an older schema's field, extras.
        let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
            (schema.iter().map(String::as_str).collect(), vec![]),
            (
                vec!["activity_id", "state", "user", "retired", "device"],
                vec!["Cost Center", "x\"y"],
            ),
            (vec!["line"], vec!["only extra"]),
            (vec![], vec![]),
        ];
        let odd = "tab\tquote\"back\\slash\u{1}Zoë €";
        for (fields, extras) in &cases {
            let columns = Arc::new(Columns {
                fields: fields.iter().map(|s| s.to_string()).collect(),
                extras: extras.iter().map(|s| s.to_string()).collect(),
            });
            let mut map = FieldMap::default();
            map.prepare(&columns, &schema);
            let all: Vec<String> = (0..fields.len() + extras.len())
                .map(|i| {
                    if i % 3 == 1 {
                        odd.to_string()
                    } else {
                        format!("v{i}")
                    }
                })
                .collect();
            // Every number of stored values, from none to all (older or damaged rows).
            for stored in 0..=all.len() {
                for (kind, previous) in [("change", None), ("resend", Some(State::Ordered))] {
                    let v = EventView {
                        id: 7,
                        key: "k-7",
                        activity_id: "ACT\"1",
                        previous_state: previous,
                        state: State::Completed,
                        updated_at: 1_790_000_000,
                        report: "r_2026-10-31.csv",
                        row: 12,
                        itsm_number: "RITM1",
                        kind,
                        fields: &columns.fields,
                        extras: &columns.extras,
                        values: all[..stored].iter().map(String::as_str).collect(),
                    };
                    let mut direct = Vec::new();
                    write_canonical_json(&v, &map, &mut direct);
                    let mut reference = Vec::new();
                    Canonical::of_view(&v, &map, &schema)
                        .write_json(&mut reference)
                        .unwrap();
                    assert_eq!(
                        String::from_utf8(direct).unwrap(),
                        String::from_utf8(reference).unwrap(),
                        "{fields:?} {extras:?} {stored} values, {kind}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_field_map_is_rebuilt_for_other_columns_of_the_same_length() {
        let schema: Vec<String> = ["device", "line"].map(String::from).to_vec();
        let mut map = FieldMap::default();
        let a = Arc::new(Columns {
            fields: vec!["device".into(), "line".into()],
            extras: vec![],
        });
        map.prepare(&a, &schema);
        assert_eq!(map.positions, vec![(0, Some(0)), (1, Some(1))]);
        let b = Arc::new(Columns {
            fields: vec!["line".into(), "device".into()],
            extras: vec![],
        });
        map.prepare(&b, &schema);
        assert_eq!(map.positions, vec![(0, Some(1)), (1, Some(0))]);
    }
}
