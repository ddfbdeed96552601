//! Which endpoints an event goes to when it names none (SPEC "Event types,
//! subscriptions, fan-out"): an endpoint's `types` and `filter`, and an
//! index by type so that matching does not scan every endpoint.
//!
//! An endpoint matches an event when one of its `types` matches the event's
//! type (or it has none) and its `filter` holds (or it has none); an endpoint
//! with neither key subscribes to nothing. Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::event::attributes::{valid_attribute_name, Attributes};
use crate::event::valid_id;

/// One filter of the CloudEvents Subscriptions API dialects, over the
/// event's attributes `type`, `id`, `source`, `subject` and its
/// `attributes` map. In TOML: `filter = { exact = { tenant = "acme" } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Filter {
    /// Every attribute named has exactly this value.
    Exact(BTreeMap<String, String>),
    /// Every attribute named starts with this value.
    Prefix(BTreeMap<String, String>),
    /// Every attribute named ends with this value.
    Suffix(BTreeMap<String, String>),
    /// Every filter holds.
    All(Vec<Filter>),
    /// At least one filter holds.
    Any(Vec<Filter>),
    /// The filter does not hold.
    Not(Box<Filter>),
}

/// What a filter and a type pattern are matched against.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub id: &'a str,
    pub attributes: &'a Attributes,
}

impl<'a> From<&'a crate::event::Fanout> for Subject<'a> {
    /// What a fan-out event's subscriptions are matched against.
    fn from(fanout: &'a crate::event::Fanout) -> Subject<'a> {
        Subject { id: &fanout.own.id, attributes: &fanout.attributes }
    }
}

impl Subject<'_> {
    /// An attribute by its name; `None` where the event does not have it.
    fn get(&self, name: &str) -> Option<&str> {
        let a = self.attributes;
        match name {
            "id" => Some(self.id),
            "type" => a.r#type.as_deref(),
            "source" => a.source.as_deref(),
            "subject" => a.subject.as_deref(),
            other => a.extensions.get(other).map(String::as_str),
        }
    }
}

impl Filter {
    /// Whether the filter holds for the event. A missing attribute fails
    /// `exact`, `prefix` and `suffix` (and so holds under `not`).
    pub fn holds(&self, event: &Subject<'_>) -> bool {
        let each = |pairs: &BTreeMap<String, String>, test: fn(&str, &str) -> bool| {
            pairs.iter().all(|(name, want)| event.get(name).is_some_and(|have| test(have, want)))
        };
        match self {
            Filter::Exact(pairs) => each(pairs, |have, want| have == want),
            Filter::Prefix(pairs) => each(pairs, |have, want| have.starts_with(want)),
            Filter::Suffix(pairs) => each(pairs, |have, want| have.ends_with(want)),
            Filter::All(filters) => filters.iter().all(|f| f.holds(event)),
            Filter::Any(filters) => filters.iter().any(|f| f.holds(event)),
            Filter::Not(filter) => !filter.holds(event),
        }
    }

    /// Checks the filter's shape: attribute names of 1-20 `[a-z0-9]`, no
    /// empty dialect. Errors name the path inside the filter (`all[1].exact`).
    pub fn validate(&self) -> Result<(), String> {
        let (dialect, pairs, filters) = match self {
            Filter::Exact(p) => ("exact", Some(p), None),
            Filter::Prefix(p) => ("prefix", Some(p), None),
            Filter::Suffix(p) => ("suffix", Some(p), None),
            Filter::All(f) => ("all", None, Some(f.as_slice())),
            Filter::Any(f) => ("any", None, Some(f.as_slice())),
            Filter::Not(f) => return f.validate().map_err(|e| format!("not.{e}")),
        };
        if let Some(pairs) = pairs {
            if pairs.is_empty() {
                return Err(format!("{dialect}: needs at least one attribute"));
            }
            if let Some(name) = pairs.keys().find(|name| !valid_attribute_name(name)) {
                return Err(format!("{dialect}: attribute name {name:?} must be 1 to 20 of [a-z0-9]"));
            }
        }
        if let Some(filters) = filters {
            if filters.is_empty() {
                return Err(format!("{dialect}: needs at least one filter"));
            }
            for (i, filter) in filters.iter().enumerate() {
                filter.validate().map_err(|e| format!("{dialect}[{i}].{e}"))?;
            }
        }
        Ok(())
    }
}

/// One entry of `types`: an exact type, or a prefix (`"invoice.*"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypePattern {
    Exact(String),
    Prefix(String),
}

impl TypePattern {
    /// Reads one `types` entry: a type (1-256 bytes of visible ASCII), or
    /// one followed by a single trailing `*` (`"*"` alone: every type).
    pub fn parse(entry: &str) -> Result<TypePattern, String> {
        let problem = || format!("{entry:?} must be a type (1 to 256 bytes of visible ASCII) or a prefix ending in *");
        match entry.strip_suffix('*') {
            Some(prefix) if prefix.contains('*') => Err(problem()),
            Some("") => Ok(TypePattern::Prefix(String::new())),
            Some(prefix) if valid_id(prefix) => Ok(TypePattern::Prefix(prefix.to_string())),
            None if valid_id(entry) && !entry.contains('*') => Ok(TypePattern::Exact(entry.to_string())),
            _ => Err(problem()),
        }
    }

    pub fn matches(&self, r#type: &str) -> bool {
        match self {
            TypePattern::Exact(exact) => r#type == exact,
            TypePattern::Prefix(prefix) => r#type.starts_with(prefix.as_str()),
        }
    }
}

/// An endpoint's subscription: its `types` and its `filter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Empty: any type (then a filter is set).
    pub types: Vec<TypePattern>,
    pub filter: Option<Filter>,
}

impl Subscription {
    /// The subscription of an endpoint's `types` and `filter`; `None` when it
    /// has neither (it subscribes to nothing). `types` were checked by
    /// validation; an entry that does not parse matches nothing.
    pub fn of(types: &[String], filter: Option<&Filter>) -> Option<Subscription> {
        if types.is_empty() && filter.is_none() {
            return None;
        }
        let types = types.iter().filter_map(|t| TypePattern::parse(t).ok()).collect();
        Some(Subscription { types, filter: filter.cloned() })
    }

    /// The plain rule, without an index.
    pub fn matches(&self, event: &Subject<'_>) -> bool {
        let Some(r#type) = event.attributes.r#type.as_deref() else { return false };
        let typed = self.types.is_empty() || self.types.iter().any(|p| p.matches(r#type));
        typed && self.filter.as_ref().is_none_or(|f| f.holds(event))
    }
}

/// The subscriptions of every endpoint, indexed by type: an exact map, the
/// prefixes by their length (only the lengths in use are looked up), and the
/// endpoints that subscribe by filter alone. Built anew when the endpoint set
/// changes; a lookup costs a few hash probes plus the filters of the
/// candidates, however many endpoints there are.
#[derive(Debug, Default)]
pub struct Index {
    /// Endpoint names, in name order; the index refers to them by position.
    names: Vec<String>,
    subscriptions: Vec<Subscription>,
    exact: HashMap<String, Vec<usize>>,
    prefixes: HashMap<String, Vec<usize>>,
    /// The distinct lengths of `prefixes`' keys, ascending.
    prefix_lengths: Vec<usize>,
    any_type: Vec<usize>,
}

impl Index {
    /// From each endpoint's name and subscription (`None`: subscribes to nothing).
    pub fn new<'a>(endpoints: impl IntoIterator<Item = (&'a str, Option<Subscription>)>) -> Index {
        let mut index = Index::default();
        let mut sorted: Vec<(&str, Subscription)> =
            endpoints.into_iter().filter_map(|(name, s)| Some((name, s?))).collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        sorted.dedup_by(|a, b| a.0 == b.0);
        let mut lengths = BTreeSet::new();
        for (at, (name, subscription)) in sorted.into_iter().enumerate() {
            if subscription.types.is_empty() {
                index.any_type.push(at);
            }
            for pattern in &subscription.types {
                match pattern {
                    TypePattern::Exact(t) => index.exact.entry(t.clone()).or_default().push(at),
                    TypePattern::Prefix(p) => {
                        lengths.insert(p.len());
                        index.prefixes.entry(p.clone()).or_default().push(at);
                    }
                }
            }
            index.names.push(name.to_string());
            index.subscriptions.push(subscription);
        }
        index.prefix_lengths = lengths.into_iter().collect();
        index
    }

    /// The names of the endpoints the event goes to, in name order, each once.
    pub fn matching(&self, event: &Subject<'_>) -> Vec<&str> {
        let Some(r#type) = event.attributes.r#type.as_deref() else { return Vec::new() };
        let mut candidates: Vec<usize> = self.any_type.clone();
        candidates.extend(self.exact.get(r#type).into_iter().flatten());
        for &length in self.prefix_lengths.iter().take_while(|&&l| l <= r#type.len()) {
            let hits = r#type.get(..length).and_then(|p| self.prefixes.get(p));
            candidates.extend(hits.into_iter().flatten());
        }
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .filter(|&at| self.subscriptions[at].filter.as_ref().is_none_or(|f| f.holds(event)))
            .map(|at| self.names[at].as_str())
            .collect()
    }

    /// Endpoints that subscribe to something.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The index of the process: the file's endpoints and the registry's,
/// rebuilt on the first lookup after the set of endpoints changed (a registry
/// read at start-up applies many records: one rebuild, not one per record).
pub struct Live {
    file: Vec<(String, Option<Subscription>)>,
    registry: Option<std::sync::Arc<crate::endpoint::registry::Registry>>,
    /// `None` once the registry changed: rebuilt on the next lookup.
    built: std::sync::Mutex<Option<std::sync::Arc<Index>>>,
}

impl Live {
    pub fn new(
        config: &crate::config::Config,
        registry: Option<std::sync::Arc<crate::endpoint::registry::Registry>>,
    ) -> Live {
        let file = config
            .endpoints
            .iter()
            .map(|(name, e)| (name.clone(), Subscription::of(&e.types, e.filter.as_ref())))
            .collect();
        Live { file, registry, built: std::sync::Mutex::new(None) }
    }

    /// The set of endpoints changed (a registry put or delete).
    pub fn changed(&self) {
        *self.built.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The current index (built now if the endpoints changed since).
    pub fn index(&self) -> std::sync::Arc<Index> {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(index) = built.as_ref() {
            return index.clone();
        }
        let registered = self.registry.as_ref().map(|r| r.all()).unwrap_or_default();
        // The file's names win over the registry's (as for events that name an endpoint).
        let from_registry =
            registered.iter().filter(|(name, _)| !self.file.iter().any(|(f, _)| f == name)).map(|(name, entry)| {
                let e = &entry.spec.endpoint;
                (name.as_str(), Subscription::of(&e.types, e.filter.as_ref()))
            });
        let from_file = self.file.iter().map(|(name, s)| (name.as_str(), s.clone()));
        let index = std::sync::Arc::new(Index::new(from_file.chain(from_registry)));
        *built = Some(index.clone());
        index
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn attributes(r#type: &str, source: Option<&str>, subject: Option<&str>, ext: &[(&str, &str)]) -> Attributes {
        Attributes {
            r#type: Some(r#type.to_string()),
            source: source.map(str::to_string),
            subject: subject.map(str::to_string),
            extensions: ext.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn filter(toml_text: &str) -> Filter {
        #[derive(Deserialize)]
        struct F {
            filter: Filter,
        }
        toml::from_str::<F>(&format!("filter = {toml_text}")).unwrap().filter
    }

    #[test]
    fn every_dialect_over_every_attribute() {
        let a = attributes("invoice.paid", Some("/billing/eu"), Some("inv-42"), &[("tenant", "acme")]);
        let event = Subject { id: "evt_1", attributes: &a };
        let cases: &[(&str, bool)] = &[
            (r#"{ exact = { type = "invoice.paid" } }"#, true),
            (r#"{ exact = { type = "invoice" } }"#, false),
            (r#"{ exact = { id = "evt_1" } }"#, true),
            (r#"{ exact = { source = "/billing/eu", subject = "inv-42" } }"#, true),
            (r#"{ exact = { source = "/billing/eu", subject = "inv-43" } }"#, false),
            (r#"{ exact = { tenant = "acme" } }"#, true),
            (r#"{ exact = { tenant = "beta" } }"#, false),
            (r#"{ exact = { region = "eu" } }"#, false),
            (r#"{ prefix = { type = "invoice." } }"#, true),
            (r#"{ prefix = { source = "/billing/" } }"#, true),
            (r#"{ prefix = { subject = "ord-" } }"#, false),
            (r#"{ prefix = { region = "" } }"#, false),
            (r#"{ prefix = { tenant = "" } }"#, true),
            (r#"{ suffix = { type = ".paid" } }"#, true),
            (r#"{ suffix = { id = "_1" } }"#, true),
            (r#"{ suffix = { subject = "-41" } }"#, false),
            (r#"{ all = [{ exact = { tenant = "acme" } }, { suffix = { type = ".paid" } }] }"#, true),
            (r#"{ all = [{ exact = { tenant = "acme" } }, { suffix = { type = ".void" } }] }"#, false),
            (r#"{ any = [{ exact = { tenant = "beta" } }, { suffix = { type = ".paid" } }] }"#, true),
            (r#"{ any = [{ exact = { tenant = "beta" } }, { suffix = { type = ".void" } }] }"#, false),
            (r#"{ not = { exact = { tenant = "acme" } } }"#, false),
            (r#"{ not = { exact = { region = "eu" } } }"#, true),
            (r#"{ not = { any = [{ prefix = { type = "user." } }] } }"#, true),
        ];
        for (text, expected) in cases {
            assert_eq!(filter(text).holds(&event), *expected, "{text}");
        }
    }

    #[test]
    fn bad_filters_and_types_say_where() {
        let cases: &[(&str, &str)] = &[
            ("{ exact = {} }", "exact: needs at least one attribute"),
            ("{ all = [] }", "all: needs at least one filter"),
            (r#"{ any = [{ exact = { a = "x" } }, { prefix = { Tenant = "x" } }] }"#, "any[1].prefix: attribute name"),
            (r#"{ not = { suffix = { a_b = "x" } } }"#, "not.suffix: attribute name"),
        ];
        for (text, expected) in cases {
            let err = filter(text).validate().unwrap_err();
            assert!(err.starts_with(expected), "{text}: {err}");
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct F {
            filter: Filter,
        }
        assert!(toml::from_str::<F>(r#"filter = { regex = { type = "x" } }"#).is_err(), "unknown dialect");
        for bad in ["", "a b", "in*voice", "**", "invoice.**", "caf\u{e9}"] {
            assert!(TypePattern::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(TypePattern::parse("invoice.*"), Ok(TypePattern::Prefix("invoice.".into())));
        assert_eq!(TypePattern::parse("*"), Ok(TypePattern::Prefix(String::new())));
        assert_eq!(TypePattern::parse("invoice.paid"), Ok(TypePattern::Exact("invoice.paid".into())));
    }

    /// The issue's example: A `invoice.*`, B `invoice.paid`, C tenant acme, D nothing.
    #[test]
    fn who_gets_what() {
        let a = Subscription::of(&["invoice.*".into()], None);
        let b = Subscription::of(&["invoice.paid".into()], None);
        let c = Subscription::of(&[], Some(&filter(r#"{ exact = { tenant = "acme" } }"#)));
        let d = Subscription::of(&[], None);
        assert!(d.is_none(), "neither key: subscribes to nothing");
        let index = Index::new([("c", c), ("a", a), ("b", b), ("d", d)]);
        assert_eq!(index.len(), 3);
        let to = |t: &str, tenant: &str| {
            let a = attributes(t, None, None, &[("tenant", tenant)]);
            index.matching(&Subject { id: "x", attributes: &a }).join(",")
        };
        assert_eq!(to("invoice.paid", "acme"), "a,b,c");
        assert_eq!(to("invoice.void", "beta"), "a");
        assert_eq!(to("user.created", "acme"), "c");
        assert_eq!(to("order.x", "beta"), "");
        let untyped = Attributes::default();
        assert!(index.matching(&Subject { id: "x", attributes: &untyped }).is_empty(), "no type, no fan-out");
    }

    fn pattern() -> impl Strategy<Value = String> {
        // A small alphabet, so that patterns and types often meet.
        prop_oneof!["[ab.]{0,4}\\*", "[ab.]{1,4}"]
    }

    fn small_filter() -> impl Strategy<Value = Filter> {
        let pairs = prop::collection::btree_map(
            prop_oneof![Just("type".to_string()), Just("t".to_string())],
            "[ab]{0,2}",
            1..3,
        );
        let leaf = prop_oneof![
            pairs.clone().prop_map(Filter::Exact),
            pairs.clone().prop_map(Filter::Prefix),
            pairs.prop_map(Filter::Suffix),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..3).prop_map(Filter::All),
                prop::collection::vec(inner.clone(), 1..3).prop_map(Filter::Any),
                inner.prop_map(|f| Filter::Not(Box::new(f))),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_index_agrees_with_a_plain_scan(
            endpoints in prop::collection::vec(
                (prop::collection::vec(pattern(), 0..3), prop::option::of(small_filter())),
                0..12,
            ),
            events in prop::collection::vec(("[ab.]{1,5}", prop::option::of("[ab]{0,2}")), 1..16),
        ) {
            let names: Vec<String> = (0..endpoints.len()).map(|i| format!("e{i:02}")).collect();
            let subscriptions: Vec<Option<Subscription>> =
                endpoints.iter().map(|(types, filter)| Subscription::of(types, filter.as_ref())).collect();
            let index = Index::new(names.iter().map(String::as_str).zip(subscriptions.iter().cloned()));
            for (r#type, t) in &events {
                let ext: Vec<(&str, &str)> = t.iter().map(|v| ("t", v.as_str())).collect();
                let a = attributes(r#type, None, None, &ext);
                let event = Subject { id: "x", attributes: &a };
                let scanned: Vec<&str> = names
                    .iter()
                    .zip(&subscriptions)
                    .filter(|(_, s)| s.as_ref().is_some_and(|s| s.matches(&event)))
                    .map(|(n, _)| n.as_str())
                    .collect();
                prop_assert_eq!(index.matching(&event), scanned);
            }
        }
    }
}
