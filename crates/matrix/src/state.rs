//! The current state of one room: the latest state event for every
//! `(type, state_key)` pair, and the questions the rules ask of it.
//!
//! Owns: reading memberships, join rules, the room version, the creator and
//! the power levels out of state events, with the spec's defaults for what
//! is absent. Never: decides whether an event may enter the state (that is
//! [`crate::auth`]) and never loads or persists anything.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::power_levels::PowerLevels;

/// The latest state event of every `(type, state_key)` pair of one room.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoomState {
    events: BTreeMap<(String, String), Value>,
    /// Members per membership (`join`, `invite`, ...), kept with `events`: a sync asks for the
    /// joined and invited counts of every room it returns.
    membership_counts: BTreeMap<String, u64>,
    /// The power levels in force, parsed once per change of the power levels or create event
    /// (every authorization check and every push evaluation reads them).
    power_levels: PowerLevels,
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

    /// The full event at `(event_type, state_key)`.
    pub fn get(&self, event_type: &str, state_key: &str) -> Option<&Value> {
        self.events
            .get(&(event_type.to_owned(), state_key.to_owned()))
    }

    /// The `content` of the event at `(event_type, state_key)`.
    pub fn content(&self, event_type: &str, state_key: &str) -> Option<&Value> {
        self.get(event_type, state_key)?.get("content")
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
        let key = match (str_field(&event, "type"), str_field(&event, "state_key")) {
            (Some(event_type), Some(state_key)) => (event_type.to_owned(), state_key.to_owned()),
            _ => return false,
        };
        let is_member = key.0 == "m.room.member";
        if is_member {
            if let Some(membership) = membership_of(&event) {
                *self.membership_counts.entry(membership.to_owned()).or_default() += 1;
            }
        }
        let levels_changed = key.0 == "m.room.power_levels" && key.1.is_empty() || key.0 == "m.room.create";
        if let Some(previous) = self.events.insert(key, event).filter(|_| is_member) {
            if let Some(count) = membership_of(&previous).and_then(|m| self.membership_counts.get_mut(m)) {
                *count -= 1;
            }
        }
        if levels_changed {
            self.power_levels = self.parse_power_levels();
        }
        true
    }

    /// Every state event, ordered by `(type, state_key)`.
    pub fn iter(&self) -> impl Iterator<Item = &Value> {
        self.events.values()
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
        self.get("m.room.create", "")
    }

    /// The room ID, as the create event records it.
    pub fn room_id(&self) -> Option<&str> {
        str_field(self.create_event()?, "room_id")
    }

    /// The user's membership (`join`, `invite`, `leave`, `ban`, `knock`), if
    /// the room has a member event for them.
    pub fn membership(&self, user_id: &str) -> Option<&str> {
        str_field(self.content("m.room.member", user_id)?, "membership")
    }

    /// Whether the user is currently joined.
    pub fn is_joined(&self, user_id: &str) -> bool {
        self.membership(user_id) == Some("join")
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
            .filter(move |(_, event)| membership_of(event) == Some(membership))
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
            Some(content) => PowerLevels::from_content_lenient(content),
            None => match self.creator() {
                Some(creator) => PowerLevels::creator_default(creator),
                None => PowerLevels::default(),
            },
        }
    }

    /// Whether the room has an `m.room.power_levels` event.
    pub fn has_power_levels(&self) -> bool {
        self.get("m.room.power_levels", "").is_some()
    }

    /// The join rule; `invite` when the room has none.
    pub fn join_rule(&self) -> &str {
        self.content("m.room.join_rules", "")
            .and_then(|c| str_field(c, "join_rule"))
            .unwrap_or("invite")
    }

    /// The history visibility; `shared` when the room has none, as the
    /// history visibility module says.
    pub fn history_visibility(&self) -> &str {
        self.content("m.room.history_visibility", "")
            .and_then(|c| str_field(c, "history_visibility"))
            .unwrap_or("shared")
    }

    /// The guest access; `forbidden` when the room has none.
    pub fn guest_access(&self) -> &str {
        self.content("m.room.guest_access", "")
            .and_then(|c| str_field(c, "guest_access"))
            .unwrap_or("forbidden")
    }

    /// The room version; `1` when the create event names none, as the spec
    /// says.
    pub fn room_version(&self) -> &str {
        self.content("m.room.create", "")
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
            Some(&json!({"join_rule": "public"}))
        );
    }
}
