//! Output mappings: an event → the client's ITSM fields, one minijinja template per field.
//!
//! A mapping file (TOML) has `[fields]` (output name → template, in order) and `[states]`
//! (canonical state → the ITSM's code, exposed as `state_code`). Templates are compiled once
//! and checked against a sample event when the mapping is loaded, so an unknown variable is
//! a configuration error, not an empty field at delivery time.
//!
//! A mapping may name `required` output fields: an event whose required field renders
//! empty is not sent (see [`Mapping::missing_required`]). The mappings shipped with the
//! tool are compiled in and named `builtin:NAME` (see [`BUILTIN`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use indexmap::IndexMap;
use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Deserialize;

use crate::ledger::StoredEvent;
use crate::state::State;
use crate::timestamp::rfc3339;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    #[serde(default)]
    states: BTreeMap<String, String>,
    fields: IndexMap<String, String>,
    /// Templates for creating a missing ticket (ITSM API sinks that mirror Activities).
    #[serde(default)]
    create: IndexMap<String, String>,
    /// Output fields that must not render empty: such an event is not sent.
    #[serde(default)]
    required: Vec<String>,
}

/// The mappings shipped with the tool: `mapping = "builtin:NAME"`, written out by `init`.
pub(crate) const BUILTIN: [(&str, &str); 2] = [
    (
        "servicenow-ritm",
        include_str!("../schemas/servicenow-ritm.toml"),
    ),
    (
        "servicenow-ritm-mirror",
        include_str!("../schemas/servicenow-ritm-mirror.toml"),
    ),
];

/// How a configuration names a mapping that is built in.
pub(crate) const BUILTIN_PREFIX: &str = "builtin:";

/// The names a template sees besides the schema's fields (see `Mapping::context`).
const CONTEXT_NAMES: [&str; 11] = [
    "event_id",
    "activity_id",
    "previous_state",
    "state",
    "state_code",
    "itsm_number",
    "updated_at",
    "report",
    "row",
    "kind",
    "extra",
];

/// minijinja's global functions (the core set: `lipsum`, `cycler`, `joiner` are contrib's).
const BUILTINS: [&str; 4] = ["range", "dict", "namespace", "debug"];

/// A compiled output mapping.
pub(crate) struct Mapping {
    env: Environment<'static>,
    pub(crate) fields: Vec<String>,
    pub(crate) create_fields: Vec<String>,
    /// Output fields that must not render empty (`required`).
    pub(crate) required: Vec<String>,
    states: BTreeMap<String, String>,
    /// Canonical field names of the report schema: always present in the context.
    schema_fields: Vec<String>,
}

impl Mapping {
    /// The mapping a configuration names: `builtin:NAME`, or a file (relative to `base`).
    pub(crate) fn named(spec: &str, base: &Path, schema_fields: &[String]) -> Result<Mapping> {
        match spec.strip_prefix(BUILTIN_PREFIX) {
            Some(name) => {
                let text = builtin(name)?;
                Mapping::parse(text, spec, schema_fields)
            }
            None => Mapping::load(&crate::setting::resolve(base, spec), schema_fields),
        }
    }

    pub(crate) fn load(path: &Path, schema_fields: &[String]) -> Result<Mapping> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the output mapping {}", path.display()))?;
        Mapping::parse(&text, &path.display().to_string(), schema_fields)
    }

    pub(crate) fn parse(text: &str, origin: &str, schema_fields: &[String]) -> Result<Mapping> {
        let raw: RawMapping =
            toml::from_str(text).with_context(|| format!("invalid output mapping {origin}"))?;
        for key in raw.states.keys() {
            if !State::ALL.iter().any(|s| s.as_str() == key) {
                bail!(
                    "output mapping {origin}: [states] has {key:?}; the states are ordered, \
                     on_back_order, completed, cancelled"
                );
            }
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in &raw.fields {
            env.add_template_owned(format!("fields.{name}"), source.clone())
                .with_context(|| format!("output mapping {origin}: template of field `{name}`"))?;
        }
        for (name, source) in &raw.create {
            env.add_template_owned(format!("create.{name}"), source.clone())
                .with_context(|| {
                    format!("output mapping {origin}: template of create field `{name}`")
                })?;
        }
        // Every variable a template names, in every branch, must be one the context has:
        // rendering the sample event alone checks only the branches it takes.
        let mut known: Vec<&str> = CONTEXT_NAMES.to_vec();
        known.extend(schema_fields.iter().map(String::as_str));
        let mut uses_state_code = false;
        for (section, names) in [("fields", &raw.fields), ("create", &raw.create)] {
            for name in names.keys() {
                let t = env.get_template(&format!("{section}.{name}"))?;
                let vars = t.undeclared_variables(false);
                uses_state_code |= vars.contains("state_code");
                let mut unknown: Vec<String> = vars
                    .into_iter()
                    .filter(|v| !known.contains(&v.as_str()) && !BUILTINS.contains(&v.as_str()))
                    .collect();
                unknown.sort();
                if !unknown.is_empty() {
                    bail!(
                        "output mapping {origin}: the template of {}field `{name}` names unknown \
                         variable(s) {}; the variables are the schema's fields and {}",
                        if section == "create" { "create " } else { "" },
                        unknown.join(", "),
                        CONTEXT_NAMES.join(", ")
                    );
                }
            }
        }
        if let Some(unknown) = raw.required.iter().find(|r| !raw.fields.contains_key(*r)) {
            bail!(
                "output mapping {origin}: `required` names {unknown:?}, which is not one of its \
                 [fields] ({})",
                raw.fields.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        // `state_code` for a state [states] does not list is the state's own name, which an
        // ITSM such as ServiceNow does not take as a code: said when the mapping is loaded.
        let missing: Vec<&str> = State::ALL
            .iter()
            .map(|s| s.as_str())
            .filter(|s| !raw.states.contains_key(*s))
            .collect();
        if uses_state_code && !missing.is_empty() {
            tracing::warn!(
                "output mapping {origin}: its templates use `state_code`, and [states] has no code \
                 for {}: their `state_code` is the state's own name",
                missing.join(", ")
            );
        }
        let mapping = Mapping {
            env,
            fields: raw.fields.keys().cloned().collect(),
            create_fields: raw.create.keys().cloned().collect(),
            required: raw.required,
            states: raw.states,
            schema_fields: schema_fields.to_vec(),
        };
        let sample = StoredEvent::sample(schema_fields);
        mapping
            .render(&sample)
            .and_then(|_| mapping.render_create(&sample))
            .map_err(|e| {
                // The sample event has no extra columns: an `extra[...]` without a default
                // would fail for every report that lacks the column.
                let hint = if format!("{e:#}").contains("undefined") {
                    "; an extra column a report may lack needs a default, e.g. \
                     {{ extra[\"Cost Center\"] | default(\"\") }}"
                } else {
                    ""
                };
                e.context(format!("output mapping {origin} does not render{hint}"))
            })?;
        Ok(mapping)
    }

    fn context(&self, e: &StoredEvent) -> Value {
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        for name in &self.schema_fields {
            ctx.insert(name.clone(), Value::from(""));
        }
        let mut extra: BTreeMap<String, Value> = BTreeMap::new();
        for (i, (k, v)) in e.attrs.iter().enumerate() {
            if i >= e.extra_from {
                extra.insert(k.clone(), Value::from(v.as_str()));
            } else {
                ctx.insert(k.clone(), Value::from(v.as_str()));
            }
        }
        ctx.insert("extra".into(), Value::from(extra));
        ctx.insert("event_id".into(), Value::from(e.key.as_str()));
        ctx.insert("activity_id".into(), Value::from(e.activity_id.as_str()));
        ctx.insert(
            "previous_state".into(),
            Value::from(e.previous_state.map_or("", State::as_str)),
        );
        ctx.insert("state".into(), Value::from(e.state.as_str()));
        let code = self
            .states
            .get(e.state.as_str())
            .cloned()
            .unwrap_or_else(|| e.state.as_str().to_string());
        ctx.insert("state_code".into(), Value::from(code));
        ctx.insert("itsm_number".into(), Value::from(e.itsm_number.as_str()));
        ctx.insert("updated_at".into(), Value::from(rfc3339(e.updated_at)));
        ctx.insert("report".into(), Value::from(e.report.as_str()));
        ctx.insert("row".into(), Value::from(e.row));
        ctx.insert("kind".into(), Value::from(e.kind.as_str()));
        Value::from(ctx)
    }

    fn render_section(
        &self,
        section: &str,
        names: &[String],
        e: &StoredEvent,
    ) -> Result<IndexMap<String, String>> {
        let ctx = self.context(e);
        let mut out = IndexMap::with_capacity(names.len());
        for name in names {
            let t = self.env.get_template(&format!("{section}.{name}"))?;
            let v = t
                .render(ctx.clone())
                .with_context(|| format!("field `{name}`"))?;
            out.insert(name.clone(), v);
        }
        Ok(out)
    }

    /// The output fields of an event, in the mapping's order.
    pub(crate) fn render(&self, e: &StoredEvent) -> Result<IndexMap<String, String>> {
        self.render_section("fields", &self.fields, e)
    }

    /// Why an event's rendered fields may not be sent: the first `required` field that is
    /// empty (blank), as the reason counted in the summary and `status`.
    pub(crate) fn missing_required(&self, rendered: &IndexMap<String, String>) -> Option<String> {
        self.required
            .iter()
            .find(|r| rendered.get(*r).is_none_or(|v| v.trim().is_empty()))
            .map(|r| required_reason(r))
    }

    /// The fields of a ticket to create for an event (the mapping's `[create]`).
    pub(crate) fn render_create(&self, e: &StoredEvent) -> Result<IndexMap<String, String>> {
        self.render_section("create", &self.create_fields, e)
    }
}

/// The reason an event is not sent when the required output field `field` is empty.
pub(crate) fn required_reason(field: &str) -> String {
    format!("the required field `{field}` is empty")
}

/// The text of the built-in mapping `name` (after `builtin:`).
pub(crate) fn builtin(name: &str) -> Result<&'static str> {
    match BUILTIN.iter().find(|(n, _)| *n == name) {
        Some((_, text)) => Ok(text),
        None => bail!(
            "there is no built-in mapping {name:?}; the built-in mappings are {}",
            BUILTIN
                .iter()
                .map(|(n, _)| format!("{BUILTIN_PREFIX}{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl StoredEvent {
    /// An event with every field filled, to check templates against.
    pub(crate) fn sample(schema_fields: &[String]) -> StoredEvent {
        StoredEvent {
            id: 1,
            key: "0".repeat(32),
            activity_id: "A1".into(),
            previous_state: Some(State::Ordered),
            state: State::Completed,
            updated_at: 0,
            report: "sample.csv".into(),
            row: 2,
            itsm_number: "RITM0000001".into(),
            kind: "change".into(),
            attrs: schema_fields
                .iter()
                .map(|f| (f.clone(), String::new()))
                .collect(),
            extra_from: schema_fields.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_check_knows_every_name_the_context_has() {
        let fields = vec!["activity_id".to_string(), "device".to_string()];
        let m = Mapping::parse("[fields]\nx = \"{{ device }}\"", "m", &fields).unwrap();
        let ctx = m.context(&StoredEvent::sample(&fields));
        let mut keys: Vec<String> = ctx.try_iter().unwrap().map(|k| k.to_string()).collect();
        keys.sort();
        let mut known: Vec<String> = CONTEXT_NAMES.iter().map(|s| s.to_string()).collect();
        known.extend(fields.iter().cloned());
        known.sort();
        known.dedup();
        assert_eq!(keys, known);
    }

    #[test]
    fn builtin_mappings_load_against_the_bundled_schema() {
        let schema = crate::report::schema::Schema::bundled().unwrap();
        let fields: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
        let base = Path::new("/nonexistent");
        let ritm = Mapping::named("builtin:servicenow-ritm", base, &fields).unwrap();
        assert_eq!(ritm.fields, ["number", "state", "work_notes"]);
        assert_eq!(ritm.required, ["number"]);
        let mirror = Mapping::named("builtin:servicenow-ritm-mirror", base, &fields).unwrap();
        assert!(
            mirror
                .create_fields
                .contains(&"short_description".to_string())
        );
        assert!(
            mirror.required.is_empty(),
            "mirroring creates the missing number"
        );
        let err = Mapping::named("builtin:nope", base, &fields).err().unwrap();
        assert!(
            format!("{err:#}").contains("builtin:servicenow-ritm, builtin:servicenow-ritm-mirror"),
            "{err:#}"
        );
    }

    #[test]
    fn a_required_field_is_missing_when_it_renders_blank() {
        let fields = vec!["activity_id".to_string()];
        let m = Mapping::parse(
            "required = ['number']\n[fields]\nnumber = '{{ itsm_number }}'\nx = 'y'",
            "m",
            &fields,
        )
        .unwrap();
        let mut e = StoredEvent::sample(&fields);
        assert_eq!(m.missing_required(&m.render(&e).unwrap()), None);
        e.itsm_number = "  ".into();
        assert_eq!(
            m.missing_required(&m.render(&e).unwrap()).as_deref(),
            Some("the required field `number` is empty")
        );
    }

    #[test]
    fn unknown_variables_fail_at_load() {
        let fields = vec!["activity_id".to_string(), "device".to_string()];
        assert!(Mapping::parse("[fields]\nx = \"{{ device }}\"", "m", &fields).is_ok());
        let err = Mapping::parse("[fields]\nx = \"{{ devise }}\"", "m", &fields)
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("unknown variable(s) devise"),
            "{err:#}"
        );
        // In a branch the sample event does not take, too.
        let err = Mapping::parse(
            "[fields]\nnote = '{% if state == \"cancelled\" %}{{ cancel_reasn }}{% endif %}'",
            "m",
            &fields,
        )
        .err()
        .unwrap();
        assert!(
            format!("{err:#}").contains("field `note` names unknown variable(s) cancel_reasn"),
            "{err:#}"
        );
        // An extra column without a default: the sample event lacks it, as some report will.
        let err = Mapping::parse("[fields]\nx = '{{ extra[\"Cost Center\"] }}'", "m", &fields)
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("needs a default, e.g."),
            "{err:#}"
        );
        // Loop variables, filters, builtins and `extra` are fine.
        assert!(
            Mapping::parse(
                "[fields]\nx = '{% for k in range(2) %}{{ k }}{{ extra.a | default(\"\") | upper }}{% endfor %}'",
                "m",
                &fields
            )
            .is_ok()
        );
    }
}
