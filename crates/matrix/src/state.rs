//! The current state of one room: the latest state event for every
//! `(type, state_key)` pair, and the questions the rules ask of it.
//!
//! Owns: reading memberships, join rules, the room version, the creator and
//! the power levels out of state events, with the spec's defaults for what
//! is absent. Never: decides whether an event may enter the state (that is
//! [`crate::auth`]) and never loads or persists anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::power_levels::PowerLevels;

/// The latest state event of every `(type, state_key)` pair of one room.
///
/// Events are kept as compact JSON text, not as `serde_json::Value` trees: a room's state is
/// held for every room a node knows, and a tree costs about ten times its text (a node with
/// 10,000 rooms held 40 KB per room). What the rules and hot paths ask of the state (memberships,
/// join rule, history visibility, room version, the create event, power levels) is read once per
/// change into fields of its own; everything else is parsed when asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoomState {
    events: BTreeMap<(String, String), StateEntry>,
    /// Members per membership (`join`, `invite`, ...), kept with `events`: a sync asks for the
    /// joined and invited counts of every room it returns.
    membership_counts: BTreeMap<String, u64>,
    /// The power levels in force, parsed once per change of the power levels or create event
    /// (every authorization check and every push evaluation reads them).
    power_levels: PowerLevels,
    /// The create event, parsed (every authorization check reads it).
    create: Option<Value>,
    /// `join_rule`, `history_visibility`, `guest_access` of their events, when set.
    join_rule: Option<Box<str>>,
    history_visibility: Option<Box<str>>,
    guest_access: Option<Box<str>>,
}

/// One state event as stored: its JSON text and what is read of it without parsing.
#[derive(Clone, Debug, PartialEq)]
struct StateEntry {
    /// Shared, so that copying the state for a snapshot copies no text.
    json: Arc<str>,
    event_id: Option<Box<str>>,
    /// `content.membership` of a member event.
    membership: Option<Box<str>>,
}

/// A state event without parsing it: its key, id and text.
#[derive(Clone, Copy, Debug)]
pub struct StateRef<'a> {
    pub event_type: &'a str,
    pub state_key: &'a str,
    pub event_id: Option<&'a str>,
    /// `content.membership` of a member event.
    pub membership: Option<&'a str>,
    pub json: &'a str,
}

impl StateRef<'_> {
    /// The event as JSON.
    pub fn parse(&self) -> Value {
        serde_json::from_str(self.json).unwrap_or(Value::Null)
    }
}

fn membership_of(event: &Value) -> Option<&str> {
    event.get("content").and_then(|c| str_field(c, "membership"))
}

/// A string field of a JSON object, if it is there and is a string.
pub(crate) fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key)?.as_str()
}

/// Room versions whose create event content carries `creator`.
fn has_creator_key(room_version: &str) -> bool {
    room_version
        .parse::<u32>()
        .is_ok_and(|v| (1..=10).contains(&v))
}

fn content_str(event: &Value, key: &str) -> Option<Box<str>> {
    event.get("content").and_then(|c| str_field(c, key)).map(Box::from)
}

impl RoomState {
    /// An empty state: a room that has not been created yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a state by inserting the events in order.
    pub fn from_events(events: impl IntoIterator<Item = Value>) -> Self {
        let mut state = Self::new();
        for event in events {
            state.insert(event);
        }
        state
    }

    /// Builds a state from events as JSON text (as [`RoomState::texts`] gives them), keeping
    /// each text as it is. Texts that are not state events are skipped.
    pub fn from_texts(texts: impl IntoIterator<Item = Arc<str>>) -> Self {
        let mut state = Self::new();
        for text in texts {
            if let Ok(event) = serde_json::from_str::<Value>(&text) {
                state.insert_with_text(event, Some(text));
            }
        }
        state
    }

    /// Every state event's JSON text, ordered by `(type, state_key)`; shared, not copied.
    pub fn texts(&self) -> impl Iterator<Item = Arc<str>> + '_ {
        self.events.values().map(|entry| entry.json.clone())
    }

    /// The full event at `(event_type, state_key)`, parsed.
    pub fn get(&self, event_type: &str, state_key: &str) -> Option<Value> {
        self.get_ref(event_type, state_key).map(|event| event.parse())
    }

    /// The event at `(event_type, state_key)` without parsing it.
    pub fn get_ref(&self, event_type: &str, state_key: &str) -> Option<StateRef<'_>> {
        let key = (event_type.to_owned(), state_key.to_owned());
        self.events.get_key_value(&key).map(|(key, entry)| Self::state_ref(key, entry))
    }

    fn state_ref<'a>(key: &'a (String, String), entry: &'a StateEntry) -> StateRef<'a> {
        StateRef {
            event_type: &key.0,
            state_key: &key.1,
            event_id: entry.event_id.as_deref(),
            membership: entry.membership.as_deref(),
            json: &entry.json,
        }
    }

    /// Whether there is an event at `(event_type, state_key)`.
    pub fn contains(&self, event_type: &str, state_key: &str) -> bool {
        self.events.contains_key(&(event_type.to_owned(), state_key.to_owned()))
    }

    /// The `content` of the event at `(event_type, state_key)`, parsed.
    pub fn content(&self, event_type: &str, state_key: &str) -> Option<Value> {
        self.get(event_type, state_key)?.get_mut("content").map(Value::take)
    }

    /// Puts a state event in, replacing the one with the same type and state
    /// key. Events without a string `type` and `state_key` are not state
    /// events and are ignored; callers that need to know use
    /// [`RoomState::try_insert`].
    pub fn insert(&mut self, event: Value) {
        self.try_insert(event);
    }

    /// Like [`RoomState::insert`], returning whether the event was a state
    /// event and went in.
    pub fn try_insert(&mut self, event: Value) -> bool {
        self.insert_with_text(event, None)
    }

    /// Inserts `event`, kept as `text` when given (its JSON text), else serialized.
    fn insert_with_text(&mut self, event: Value, text: Option<Arc<str>>) -> bool {
        let key = match (str_field(&event, "type"), str_field(&event, "state_key")) {
            (Some(event_type), Some(state_key)) => (event_type.to_owned(), state_key.to_owned()),
            _ => return false,
        };
        let is_member = key.0 == "m.room.member";
        let membership = if is_member { membership_of(&event).map(Box::<str>::from) } else { None };
        if let Some(membership) = &membership {
            *self.membership_counts.entry(membership.to_string()).or_default() += 1;
        }
        match (key.0.as_str(), key.1.is_empty()) {
            ("m.room.join_rules", true) => self.join_rule = content_str(&event, "join_rule"),
            ("m.room.history_visibility", true) => self.history_visibility = content_str(&event, "history_visibility"),
            ("m.room.guest_access", true) => self.guest_access = content_str(&event, "guest_access"),
            _ => {}
        }
        let levels_changed = key.0 == "m.room.power_levels" && key.1.is_empty() || key.0 == "m.room.create";
        let new_levels = (key.0 == "m.room.power_levels" && key.1.is_empty())
            .then(|| event.get("content").map(PowerLevels::from_content_lenient))
            .flatten();
        let entry = StateEntry {
            json: text.unwrap_or_else(|| serde_json::to_string(&event).unwrap_or_default().into()),
            event_id: str_field(&event, "event_id").map(Box::from),
            membership,
        };
        if key.0 == "m.room.create" && key.1.is_empty() {
            self.create = Some(event);
        }
        if let Some(previous) = self.events.insert(key, entry).filter(|_| is_member) {
            if let Some(count) = previous.membership.as_deref().and_then(|m| self.membership_counts.get_mut(m)) {
                *count -= 1;
            }
        }
        if levels_changed {
            self.power_levels = new_levels.unwrap_or_else(|| self.parse_power_levels());
        }
        true
    }

    /// Every state event, ordered by `(type, state_key)`, parsed.
    pub fn iter(&self) -> impl Iterator<Item = Value> + '_ {
        self.refs().map(|event| event.parse())
    }

    /// Every state event, ordered by `(type, state_key)`, without parsing.
    pub fn refs(&self) -> impl Iterator<Item = StateRef<'_>> + '_ {
        self.events.iter().map(|(key, entry)| Self::state_ref(key, entry))
    }

    /// The state event with this id, if it is current.
    pub fn find_by_id(&self, event_id: &str) -> Option<Value> {
        self.refs().find(|event| event.event_id == Some(event_id)).map(|event| event.parse())
    }

    /// The number of state events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there is no state at all (the room has not been created).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The `m.room.create` event.
    pub fn create_event(&self) -> Option<&Value> {
        self.create.as_ref()
    }

    /// The room ID, as the create event records it.
    pub fn room_id(&self) -> Option<&str> {
        str_field(self.create_event()?, "room_id")
    }

    /// The user's membership (`join`, `invite`, `leave`, `ban`, `knock`), if
    /// the room has a member event for them.
    pub fn membership(&self, user_id: &str) -> Option<&str> {
        self.events.get(&("m.room.member".to_owned(), user_id.to_owned()))?.membership.as_deref()
    }

    /// Whether the user is currently joined.
    pub fn is_joined(&self, user_id: &str) -> bool {
        self.membership(user_id) == Some("join")
    }

    /// The member events, in user id order, without parsing them.
    pub fn member_refs(&self) -> impl Iterator<Item = StateRef<'_>> + '_ {
        self.events
            .range(("m.room.member".to_owned(), String::new())..)
            .take_while(|((event_type, _), _)| event_type == "m.room.member")
            .map(|(key, entry)| Self::state_ref(key, entry))
    }

    /// The users whose membership is `membership`, in user ID order.
    pub fn members_with(&self, membership: &str) -> Vec<String> {
        self.members(membership).map(str::to_owned).collect()
    }

    /// The users whose membership is `membership`, in user id order, without copying them.
    pub fn members<'a>(&'a self, membership: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.events
            .range(("m.room.member".to_owned(), String::new())..)
            .take_while(|((event_type, _), _)| event_type == "m.room.member")
            .filter(move |(_, entry)| entry.membership.as_deref() == Some(membership))
            .map(|((_, state_key), _)| state_key.as_str())
    }

    /// How many users have membership `membership`.
    pub fn member_count(&self, membership: &str) -> u64 {
        self.membership_counts.get(membership).copied().unwrap_or(0)
    }

    /// The number of joined members, as push rules' `room_member_count` wants it.
    pub fn joined_count(&self) -> u64 {
        self.member_count("join")
    }

    /// The power levels in force: the event's content if there is one, else
    /// the creator default.
    pub fn power_levels(&self) -> &PowerLevels {
        &self.power_levels
    }

    fn parse_power_levels(&self) -> PowerLevels {
        match self.content("m.room.power_levels", "") {
            Some(content) => PowerLevels::from_content_lenient(&content),
            None => match self.creator() {
                Some(creator) => PowerLevels::creator_default(creator),
                None => PowerLevels::default(),
            },
        }
    }

    /// Whether the room has an `m.room.power_levels` event.
    pub fn has_power_levels(&self) -> bool {
        self.contains("m.room.power_levels", "")
    }

    /// The join rule; `invite` when the room has none.
    pub fn join_rule(&self) -> &str {
        self.join_rule.as_deref().unwrap_or("invite")
    }

    /// The history visibility; `shared` when the room has none, as the
    /// history visibility module says.
    pub fn history_visibility(&self) -> &str {
        self.history_visibility.as_deref().unwrap_or("shared")
    }

    /// The guest access; `forbidden` when the room has none.
    pub fn guest_access(&self) -> &str {
        self.guest_access.as_deref().unwrap_or("forbidden")
    }

    /// The room version; `1` when the create event names none, as the spec
    /// says.
    pub fn room_version(&self) -> &str {
        self.create_event()
            .and_then(|create| create.get("content"))
            .and_then(|c| str_field(c, "room_version"))
            .unwrap_or("1")
    }

    /// The room's creator. Room versions up to 10 record it as
    /// `content.creator`; from 11 on it is the create event's `sender`
    /// (which in every version is the same user).
    pub fn creator(&self) -> Option<&str> {
        let create = self.create_event()?;
        let from_content = || create.get("content").and_then(|c| str_field(c, "creator"));
        let claimed = if has_creator_key(self.room_version()) {
            from_content()
        } else {
            None
        };
        claimed.or_else(|| str_field(create, "sender"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state_event(event_type: &str, state_key: &str, sender: &str, content: Value) -> Value {
        json!({"type": event_type, "state_key": state_key, "sender": sender, "content": content, "room_id": "!r:x"})
    }

    fn room() -> RoomState {
        RoomState::from_events([
            state_event(
                "m.room.create",
                "",
                "@alice:x",
                json!({"room_version": "11"}),
            ),
            state_event(
                "m.room.member",
                "@alice:x",
                "@alice:x",
                json!({"membership": "join"}),
            ),
            state_event(
                "m.room.member",
                "@bob:x",
                "@alice:x",
                json!({"membership": "invite"}),
            ),
            state_event(
                "m.room.member",
                "@carol:x",
                "@carol:x",
                json!({"membership": "join"}),
            ),
        ])
    }

    #[test]
    fn insert_replaces_and_ignores_non_state() {
        let mut state = room();
        assert_eq!(state.len(), 4);
        state.insert(state_event(
            "m.room.member",
            "@bob:x",
            "@bob:x",
            json!({"membership": "join"}),
        ));
        assert_eq!(state.len(), 4);
        assert_eq!(state.membership("@bob:x"), Some("join"));
        assert!(!state.try_insert(json!({"type": "m.room.message", "content": {}})));
        assert!(!state.try_insert(json!({"type": "x", "state_key": 5})));
        assert!(!state.try_insert(json!(null)));
        assert_eq!(state.len(), 4);
        assert_eq!(state.iter().count(), 4);
    }

    #[test]
    fn reads_memberships() {
        let state = room();
        assert_eq!(state.membership("@alice:x"), Some("join"));
        assert_eq!(state.membership("@nobody:x"), None);
        assert_eq!(
            state.members_with("join"),
            vec!["@alice:x".to_owned(), "@carol:x".to_owned()]
        );
        assert_eq!(state.members_with("invite"), vec!["@bob:x".to_owned()]);
        assert_eq!(state.joined_count(), 2);
        assert!(state.is_joined("@carol:x"));
        assert!(!state.is_joined("@bob:x"));
    }

    #[test]
    fn defaults_when_absent() {
        let state = room();
        assert_eq!(state.join_rule(), "invite");
        assert_eq!(state.history_visibility(), "shared");
        assert_eq!(state.guest_access(), "forbidden");
        assert_eq!(state.room_version(), "11");
        assert_eq!(state.room_id(), Some("!r:x"));
        let empty = RoomState::new();
        assert!(empty.is_empty());
        assert_eq!(empty.room_version(), "1");
        assert_eq!(empty.creator(), None);
        assert_eq!(*empty.power_levels(), PowerLevels::default());
    }

    #[test]
    fn creator_per_version() {
        assert_eq!(room().creator(), Some("@alice:x"));
        let v10 = RoomState::from_events([state_event(
            "m.room.create",
            "",
            "@alice:x",
            json!({"room_version": "10", "creator": "@alice:x"}),
        )]);
        assert_eq!(v10.creator(), Some("@alice:x"));
        // In v11 `creator` in content means nothing.
        let v11 = RoomState::from_events([state_event(
            "m.room.create",
            "",
            "@alice:x",
            json!({"room_version": "11", "creator": "@mallory:x"}),
        )]);
        assert_eq!(v11.creator(), Some("@alice:x"));
    }

    #[test]
    fn member_counts_follow_membership_changes() {
        let mut state = room();
        let joined_before = state.member_count("join");
        state.insert(state_event("m.room.member", "@bob:x", "@bob:x", json!({"membership": "invite"})));
        assert_eq!(state.member_count("invite"), 1);
        state.insert(state_event("m.room.member", "@bob:x", "@bob:x", json!({"membership": "join"})));
        assert_eq!((state.member_count("invite"), state.member_count("join")), (0, joined_before + 1));
        state.insert(state_event("m.room.member", "@bob:x", "@bob:x", json!({"membership": "leave"})));
        assert_eq!(state.member_count("join"), joined_before);
        assert_eq!(state.joined_count(), state.members_with("join").len() as u64);
        assert_eq!(state.members("leave").collect::<Vec<_>>(), vec!["@bob:x"]);
    }

    #[test]
    fn power_levels_from_event_or_creator_default() {
        let mut state = room();
        assert!(!state.has_power_levels());
        assert_eq!(state.power_levels().user_level("@alice:x"), 100);
        assert_eq!(state.power_levels().user_level("@carol:x"), 0);
        state.insert(state_event(
            "m.room.power_levels",
            "",
            "@alice:x",
            json!({"users": {"@carol:x": 60}}),
        ));
        assert!(state.has_power_levels());
        assert_eq!(state.power_levels().user_level("@alice:x"), 0);
        assert_eq!(state.power_levels().user_level("@carol:x"), 60);
    }

    #[test]
    fn join_rule_from_event() {
        let mut state = room();
        state.insert(state_event(
            "m.room.join_rules",
            "",
            "@alice:x",
            json!({"join_rule": "public"}),
        ));
        assert_eq!(state.join_rule(), "public");
        assert_eq!(
            state.content("m.room.join_rules", ""),
            Some(json!({"join_rule": "public"}))
        );
    }

    #[test]
    fn stored_as_text_read_back_whole() {
        let mut state = room();
        let topic = json!({"type": "m.room.topic", "state_key": "", "sender": "@alice:x", "event_id": "$t1",
            "content": {"topic": "ünïcode \"quoted\""}, "room_id": "!r:x", "origin_server_ts": 5});
        state.insert(topic.clone());
        assert_eq!(state.get("m.room.topic", ""), Some(topic.clone()));
        assert_eq!(state.find_by_id("$t1"), Some(topic.clone()));
        assert_eq!(state.get_ref("m.room.topic", "").unwrap().event_id, Some("$t1"));
        // Cached readings follow each change of their event.
        assert_eq!(state.join_rule(), "invite");
        state.insert(state_event("m.room.join_rules", "", "@alice:x", json!({"join_rule": "public"})));
        assert_eq!(state.join_rule(), "public");
        state.insert(state_event("m.room.history_visibility", "", "@alice:x", json!({"history_visibility": "joined"})));
        assert_eq!(state.history_visibility(), "joined");
        state.insert(state_event("m.room.member", "@bob:x", "@bob:x", json!({"membership": "leave"})));
        assert_eq!(state.membership("@bob:x"), Some("leave"));
        assert_eq!(state.member_count("invite"), 0);
        let members: Vec<(&str, Option<&str>)> = state.member_refs().map(|m| (m.state_key, m.membership)).collect();
        assert_eq!(members, vec![("@alice:x", Some("join")), ("@bob:x", Some("leave")), ("@carol:x", Some("join"))]);
        assert_eq!(state.iter().count(), state.len());
    }
}
