//! Filters (spec "Filtering"; `POST /user/{userId}/filter` and the `filter`
//! parameter of `/sync` and `/messages`): parsing, bounds, and deciding
//! whether an event or a room passes.
//!
//! Owns: the filter data model and the matching rules. Never: stores
//! filters, chooses filter IDs, or applies lazy-loading (the flags are only
//! carried; what "redundant members" are depends on what the server sent
//! before).

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::json_path;

/// The most entries any list in a filter may hold, so that matching stays
/// cheap however hostile the filter.
pub const MAX_LIST_ENTRIES: usize = 1000;
/// The largest `limit` honoured; bigger ones are clamped.
pub const MAX_LIMIT: u64 = 1000;

/// Why a filter was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("invalid filter: {0}")]
    BadJson(String),
    #[error("`{field}` has {len} entries; at most {max} are allowed")]
    TooManyEntries {
        field: String,
        len: usize,
        max: usize,
    },
}

/// `null` means the same as an absent list.
fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

/// `null` means the same as an absent flag.
fn null_as_false<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or_default())
}

/// `null` means the same as an absent sub-filter.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn is_false(flag: &bool) -> bool {
    !*flag
}

/// How events are formatted in responses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    #[default]
    Client,
    Federation,
}

impl EventFormat {
    fn is_client(&self) -> bool {
        *self == EventFormat::Client
    }
}

/// A whole filter, as uploaded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    /// Dotted paths of the fields to keep in every event; `None` keeps all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_fields: Option<Vec<String>>,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "EventFormat::is_client"
    )]
    pub event_format: EventFormat,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "EventFilter::is_empty"
    )]
    pub presence: EventFilter,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "EventFilter::is_empty"
    )]
    pub account_data: EventFilter,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "RoomFilter::is_empty"
    )]
    pub room: RoomFilter,
}

/// The `room` part of a filter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomFilter {
    #[serde(
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub not_rooms: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "RoomEventFilter::is_empty"
    )]
    pub ephemeral: RoomEventFilter,
    #[serde(deserialize_with = "null_as_false", skip_serializing_if = "is_false")]
    pub include_leave: bool,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "RoomEventFilter::is_empty"
    )]
    pub state: RoomEventFilter,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "RoomEventFilter::is_empty"
    )]
    pub timeline: RoomEventFilter,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "RoomEventFilter::is_empty"
    )]
    pub account_data: RoomEventFilter,
}

/// A filter on non-room events (presence, global account data).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub not_senders: Vec<String>,
    #[serde(
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub not_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub senders: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
}

/// A filter on room events (state, timeline, ephemeral, room account data).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomEventFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub not_senders: Vec<String>,
    #[serde(
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub not_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub senders: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    /// `Some(true)`: only events whose content has `url`; `Some(false)`: only
    /// events whose content has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contains_url: Option<bool>,
    #[serde(deserialize_with = "null_as_false", skip_serializing_if = "is_false")]
    pub include_redundant_members: bool,
    #[serde(deserialize_with = "null_as_false", skip_serializing_if = "is_false")]
    pub lazy_load_members: bool,
    #[serde(
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub not_rooms: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    #[serde(deserialize_with = "null_as_false", skip_serializing_if = "is_false")]
    pub unread_thread_notifications: bool,
}

/// Glob match where only `*` is special (the filter API's wildcard; `?` is
/// literal here, unlike in push rules). Linear-time greedy matching with
/// backtracking to the last star.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == '*' {
            last_star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = last_star {
            p = star_p + 1;
            t = star_t + 1;
            last_star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

fn any_type_matches(patterns: &[String], event_type: &str) -> bool {
    patterns
        .iter()
        .any(|pattern| wildcard_match(pattern, event_type))
}

fn str_of<'a>(event: &'a Value, key: &str) -> Option<&'a str> {
    event.get(key)?.as_str()
}

/// The sender and type checks common to both filter kinds. An event without
/// a sender never passes a `senders` list; one without a type never passes
/// a `types` list.
fn sender_and_type_match(
    not_senders: &[String],
    senders: Option<&[String]>,
    not_types: &[String],
    types: Option<&[String]>,
    event: &Value,
) -> bool {
    let sender = str_of(event, "sender");
    let event_type = str_of(event, "type");
    if let Some(sender) = sender
        && not_senders.iter().any(|s| s == sender)
    {
        return false;
    }
    if let Some(event_type) = event_type
        && any_type_matches(not_types, event_type)
    {
        return false;
    }
    if let Some(senders) = senders
        && !sender.is_some_and(|sender| senders.iter().any(|s| s == sender))
    {
        return false;
    }
    if let Some(types) = types
        && !event_type.is_some_and(|event_type| any_type_matches(types, event_type))
    {
        return false;
    }
    true
}

/// `limit` bounded to `1..=MAX_LIMIT`, or `default` when absent.
fn bounded_limit(limit: Option<u64>, default: usize) -> usize {
    match limit {
        // MAX_LIMIT fits any usize, so the conversion cannot fail.
        Some(limit) => usize::try_from(limit.clamp(1, MAX_LIMIT)).unwrap_or(1),
        None => default,
    }
}

fn check_len(field: &str, list: Option<&Vec<String>>) -> Result<(), FilterError> {
    match list {
        Some(list) if list.len() > MAX_LIST_ENTRIES => Err(FilterError::TooManyEntries {
            field: field.to_owned(),
            len: list.len(),
            max: MAX_LIST_ENTRIES,
        }),
        _ => Ok(()),
    }
}

impl EventFilter {
    fn is_empty(&self) -> bool {
        *self == EventFilter::default()
    }

    /// Whether the event passes. `not_*` lists win over their positive
    /// counterparts.
    pub fn matches(&self, event: &Value) -> bool {
        sender_and_type_match(
            &self.not_senders,
            self.senders.as_deref(),
            &self.not_types,
            self.types.as_deref(),
            event,
        )
    }

    /// `limit` bounded to `1..=1000`, or `default` when absent.
    pub fn limit_or(&self, default: usize) -> usize {
        bounded_limit(self.limit, default)
    }

    fn validate(&self, prefix: &str) -> Result<(), FilterError> {
        check_len(&format!("{prefix}.not_senders"), Some(&self.not_senders))?;
        check_len(&format!("{prefix}.not_types"), Some(&self.not_types))?;
        check_len(&format!("{prefix}.senders"), self.senders.as_ref())?;
        check_len(&format!("{prefix}.types"), self.types.as_ref())
    }
}

impl RoomEventFilter {
    fn is_empty(&self) -> bool {
        *self == RoomEventFilter::default()
    }

    /// Whether the event passes: room lists first (events without a
    /// `room_id`, as in `/sync`'s per-room sections, skip them), then
    /// senders and types, then `contains_url`.
    pub fn matches(&self, event: &Value) -> bool {
        if let Some(room_id) = str_of(event, "room_id")
            && !self.room_allowed(room_id)
        {
            return false;
        }
        if !sender_and_type_match(
            &self.not_senders,
            self.senders.as_deref(),
            &self.not_types,
            self.types.as_deref(),
            event,
        ) {
            return false;
        }
        match self.contains_url {
            Some(wanted) => event.get("content").and_then(|c| c.get("url")).is_some() == wanted,
            None => true,
        }
    }

    /// Whether the room passes this filter's own room lists.
    pub fn room_allowed(&self, room_id: &str) -> bool {
        !self.not_rooms.iter().any(|r| r == room_id)
            && self
                .rooms
                .as_ref()
                .is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
    }

    /// `limit` bounded to `1..=1000`, or `default` when absent.
    pub fn limit_or(&self, default: usize) -> usize {
        bounded_limit(self.limit, default)
    }

    fn validate(&self, prefix: &str) -> Result<(), FilterError> {
        check_len(&format!("{prefix}.not_senders"), Some(&self.not_senders))?;
        check_len(&format!("{prefix}.not_types"), Some(&self.not_types))?;
        check_len(&format!("{prefix}.senders"), self.senders.as_ref())?;
        check_len(&format!("{prefix}.types"), self.types.as_ref())?;
        check_len(&format!("{prefix}.not_rooms"), Some(&self.not_rooms))?;
        check_len(&format!("{prefix}.rooms"), self.rooms.as_ref())
    }
}

impl RoomFilter {
    fn is_empty(&self) -> bool {
        *self == RoomFilter::default()
    }

    /// Whether the room passes the top-level room lists, which apply before
    /// any of the per-section filters. `not_rooms` wins.
    pub fn room_allowed(&self, room_id: &str) -> bool {
        !self.not_rooms.iter().any(|r| r == room_id)
            && self
                .rooms
                .as_ref()
                .is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
    }
}

/// Copies the value at `path` from `source` into `target`, creating the
/// objects on the way.
fn copy_path(source: &Value, target: &mut Map<String, Value>, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(value) = source.as_object().and_then(|o| o.get(first)) else {
        return;
    };
    if rest.is_empty() {
        target.insert(first.clone(), value.clone());
        return;
    }
    if !value.is_object() {
        return;
    }
    let entry = target
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(child) = entry.as_object_mut() {
        copy_path(value, child, rest);
    }
}

impl Filter {
    /// Parses an uploaded filter. Wrong types are [`FilterError::BadJson`];
    /// lists longer than [`MAX_LIST_ENTRIES`] are refused. Unknown keys are
    /// ignored, as the API's objects are open.
    pub fn parse(json: &Value) -> Result<Filter, FilterError> {
        if !json.is_object() {
            return Err(FilterError::BadJson(
                "a filter must be a JSON object".into(),
            ));
        }
        // serde would also build these structs from JSON arrays; the API
        // only knows objects.
        for path in [
            &["presence"][..],
            &["account_data"],
            &["room"],
            &["room", "ephemeral"],
            &["room", "state"],
            &["room", "timeline"],
            &["room", "account_data"],
        ] {
            let value = path.iter().try_fold(json, |node, key| node.get(key));
            if value.is_some_and(|v| !v.is_object() && !v.is_null()) {
                return Err(FilterError::BadJson(format!(
                    "`{}` must be an object",
                    path.join(".")
                )));
            }
        }
        let filter: Filter =
            Filter::deserialize(json).map_err(|e| FilterError::BadJson(e.to_string()))?;
        check_len("event_fields", filter.event_fields.as_ref())?;
        filter.presence.validate("presence")?;
        filter.account_data.validate("account_data")?;
        let room = &filter.room;
        check_len("room.not_rooms", Some(&room.not_rooms))?;
        check_len("room.rooms", room.rooms.as_ref())?;
        room.ephemeral.validate("room.ephemeral")?;
        room.state.validate("room.state")?;
        room.timeline.validate("room.timeline")?;
        room.account_data.validate("room.account_data")?;
        Ok(filter)
    }

    /// The filter as JSON, absent and default fields left out.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Map::new()))
    }

    /// The number of timeline events to return per room: the timeline's
    /// `limit` bounded to `1..=1000`, or `default` when there is none.
    pub fn timeline_limit(&self, default: usize) -> usize {
        self.room.timeline.limit_or(default)
    }

    /// The event reduced to `event_fields`, when the filter has them. The
    /// spec lets a server include more than was asked for, so nothing is
    /// forced in; paths into non-objects are simply skipped.
    pub fn apply_event_fields(&self, event: &Value) -> Value {
        let Some(fields) = &self.event_fields else {
            return event.clone();
        };
        let mut reduced = Map::new();
        for field in fields {
            copy_path(event, &mut reduced, &json_path::split(field));
        }
        Value::Object(reduced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(event_type: &str, sender: &str) -> Value {
        json!({"type": event_type, "sender": sender, "room_id": "!r:x", "content": {"body": "hi"}})
    }

    #[test]
    fn parses_the_spec_example() {
        let filter = Filter::parse(&json!({
            "room": {
                "state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"]},
                "timeline": {"limit": 10, "types": ["m.room.message"], "not_rooms": ["!726s6s6q:example.com"], "not_senders": ["@spam:example.com"]},
                "ephemeral": {"types": ["m.receipt", "m.typing"], "not_rooms": ["!726s6s6q:example.com"], "not_senders": ["@spam:example.com"]}
            },
            "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
            "event_format": "client",
            "event_fields": ["type", "content", "sender"]
        }))
        .unwrap();
        assert_eq!(filter.room.timeline.limit, Some(10));
        assert_eq!(filter.room.state.types, Some(vec!["m.room.*".to_owned()]));
        assert_eq!(
            filter.presence.not_senders,
            vec!["@alice:example.com".to_owned()]
        );
        assert_eq!(filter.event_format, EventFormat::Client);
        assert_eq!(filter.timeline_limit(20), 10);
        // Round trip through JSON.
        assert_eq!(Filter::parse(&filter.to_json()).unwrap(), filter);
    }

    #[test]
    fn empty_and_null_parts() {
        let filter = Filter::parse(&json!({})).unwrap();
        assert_eq!(filter, Filter::default());
        assert_eq!(filter.to_json(), json!({}));
        let filter = Filter::parse(
            &json!({"room": null, "presence": {"not_types": null}, "event_format": null}),
        )
        .unwrap();
        assert_eq!(filter, Filter::default());
        assert_eq!(filter.timeline_limit(20), 20);
    }

    #[test]
    fn wrong_types_are_bad_json() {
        for bad in [
            json!([]),
            json!("x"),
            json!({"room": {"timeline": {"limit": "10"}}}),
            json!({"room": {"timeline": {"limit": -1}}}),
            json!({"room": {"timeline": {"types": "m.room.message"}}}),
            json!({"room": {"include_leave": "yes"}}),
            json!({"event_format": "xml"}),
            json!({"event_fields": [1]}),
            json!({"presence": []}),
            json!({"room": {"timeline": [10]}}),
            json!({"room": 5}),
        ] {
            assert!(
                matches!(Filter::parse(&bad), Err(FilterError::BadJson(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn list_bounds() {
        let many: Vec<String> = (0..=MAX_LIST_ENTRIES).map(|i| format!("t{i}")).collect();
        let err = Filter::parse(&json!({"room": {"timeline": {"types": many}}})).unwrap_err();
        assert_eq!(
            err,
            FilterError::TooManyEntries {
                field: "room.timeline.types".into(),
                len: 1001,
                max: 1000
            }
        );
        let enough: Vec<String> = (0..MAX_LIST_ENTRIES).map(|i| format!("t{i}")).collect();
        assert!(Filter::parse(&json!({"room": {"rooms": enough}})).is_ok());
        let many_rooms: Vec<String> = (0..=MAX_LIST_ENTRIES).map(|i| format!("!r{i}:x")).collect();
        assert!(matches!(
            Filter::parse(&json!({"room": {"not_rooms": many_rooms}})),
            Err(FilterError::TooManyEntries { .. })
        ));
    }

    #[test]
    fn limit_is_clamped() {
        let with_limit =
            |limit: u64| Filter::parse(&json!({"room": {"timeline": {"limit": limit}}})).unwrap();
        assert_eq!(with_limit(0).timeline_limit(10), 1);
        assert_eq!(with_limit(5).timeline_limit(10), 5);
        assert_eq!(with_limit(1_000_000).timeline_limit(10), 1000);
        assert_eq!(with_limit(u64::MAX).timeline_limit(10), 1000);
        let presence = EventFilter {
            limit: Some(7),
            ..Default::default()
        };
        assert_eq!(presence.limit_or(3), 7);
        assert_eq!(EventFilter::default().limit_or(3), 3);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("m.room.*", "m.room.message"));
        assert!(wildcard_match("m.room.*", "m.room."));
        assert!(!wildcard_match("m.room.*", "m.roomy"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("*.member", "m.room.member"));
        assert!(wildcard_match("m.*.m*r", "m.room.member"));
        assert!(!wildcard_match("m.*.m*r", "m.room.members"));
        assert!(wildcard_match("a*b*c", "aXbYbZc"));
        assert!(!wildcard_match("m.room.?", "m.room.x"));
        assert!(wildcard_match("m.room.?", "m.room.?"));
        assert!(!wildcard_match("", "x"));
    }

    #[test]
    fn type_wildcards_and_not_types_precedence() {
        let filter = EventFilter {
            types: Some(vec!["m.room.*".into()]),
            not_types: vec!["m.room.member".into()],
            ..Default::default()
        };
        assert!(filter.matches(&event("m.room.message", "@a:x")));
        assert!(!filter.matches(&event("m.room.member", "@a:x")));
        assert!(!filter.matches(&event("m.presence", "@a:x")));
        let not_everything = EventFilter {
            not_types: vec!["*".into()],
            types: Some(vec!["m.room.message".into()]),
            ..Default::default()
        };
        assert!(!not_everything.matches(&event("m.room.message", "@a:x")));
        let none = EventFilter {
            types: Some(vec![]),
            ..Default::default()
        };
        assert!(!none.matches(&event("m.room.message", "@a:x")));
        assert!(EventFilter::default().matches(&event("anything", "@a:x")));
        assert!(EventFilter::default().matches(&json!(null)));
    }

    #[test]
    fn senders_and_not_senders() {
        let filter = RoomEventFilter {
            senders: Some(vec!["@a:x".into(), "@b:x".into()]),
            not_senders: vec!["@b:x".into()],
            ..Default::default()
        };
        assert!(filter.matches(&event("m.room.message", "@a:x")));
        assert!(!filter.matches(&event("m.room.message", "@b:x")));
        assert!(!filter.matches(&event("m.room.message", "@c:x")));
        assert!(!filter.matches(&json!({"type": "m.typing"})));
        let only_not = RoomEventFilter {
            not_senders: vec!["@b:x".into()],
            ..Default::default()
        };
        assert!(only_not.matches(&json!({"type": "m.typing"})));
    }

    #[test]
    fn rooms_and_contains_url() {
        let filter = RoomEventFilter {
            rooms: Some(vec!["!r:x".into(), "!s:x".into()]),
            not_rooms: vec!["!s:x".into()],
            ..Default::default()
        };
        assert!(filter.matches(&event("m.room.message", "@a:x")));
        let mut in_s = event("m.room.message", "@a:x");
        in_s["room_id"] = json!("!s:x");
        assert!(!filter.matches(&in_s));
        let mut no_room = event("m.room.message", "@a:x");
        no_room.as_object_mut().unwrap().remove("room_id");
        assert!(filter.matches(&no_room));

        let with_url = json!({"type": "m.room.message", "content": {"url": "mxc://x/y"}});
        let without_url = json!({"type": "m.room.message", "content": {"body": "x"}});
        let only_urls = RoomEventFilter {
            contains_url: Some(true),
            ..Default::default()
        };
        let no_urls = RoomEventFilter {
            contains_url: Some(false),
            ..Default::default()
        };
        assert!(only_urls.matches(&with_url));
        assert!(!only_urls.matches(&without_url));
        assert!(!no_urls.matches(&with_url));
        assert!(no_urls.matches(&without_url));
    }

    #[test]
    fn room_filter_room_allowed() {
        let filter =
            Filter::parse(&json!({"room": {"rooms": ["!a:x", "!b:x"], "not_rooms": ["!b:x"]}}))
                .unwrap();
        assert!(filter.room.room_allowed("!a:x"));
        assert!(!filter.room.room_allowed("!b:x"));
        assert!(!filter.room.room_allowed("!c:x"));
        assert!(RoomFilter::default().room_allowed("!c:x"));
    }

    #[test]
    fn flags() {
        let filter = Filter::parse(&json!({"room": {"include_leave": true, "state": {"lazy_load_members": true, "include_redundant_members": true}, "timeline": {"unread_thread_notifications": true}}})).unwrap();
        assert!(filter.room.include_leave);
        assert!(filter.room.state.lazy_load_members);
        assert!(filter.room.state.include_redundant_members);
        assert!(filter.room.timeline.unread_thread_notifications);
        assert_eq!(Filter::parse(&filter.to_json()).unwrap(), filter);
    }

    #[test]
    fn event_fields() {
        let filter = Filter::parse(&json!({"event_fields": ["type", "content.body", r"content.m\.relates_to", "content.body.deeper", "missing.path"]})).unwrap();
        let event = json!({
            "type": "m.room.message",
            "sender": "@a:x",
            "content": {"body": "hi", "msgtype": "m.text", "m.relates_to": {"rel_type": "m.thread"}}
        });
        assert_eq!(
            filter.apply_event_fields(&event),
            json!({"type": "m.room.message", "content": {"body": "hi", "m.relates_to": {"rel_type": "m.thread"}}})
        );
        assert_eq!(Filter::default().apply_event_fields(&event), event);
    }
}
