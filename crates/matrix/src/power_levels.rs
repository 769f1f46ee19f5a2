//! Power levels (`m.room.power_levels`) for room versions 10 and 11: parsing
//! and validating the content, the spec's defaults, and the level a user has
//! or an event type needs.
//!
//! Owns: what the numbers in a power levels event mean. Never: decides
//! whether a *change* of power levels is allowed (that is [`crate::auth`]),
//! and never accepts the stringy or floaty values of older room versions.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::auth::AuthError;
use crate::ids;

/// Power levels must fit canonical JSON's integer range `[-(2**53)+1, (2**53)-1]`.
pub const MAX_POWER_LEVEL: i64 = (1 << 53) - 1;
/// See [`MAX_POWER_LEVEL`].
pub const MIN_POWER_LEVEL: i64 = -MAX_POWER_LEVEL;

/// The level the room creator has while no power levels event exists.
pub const CREATOR_LEVEL: i64 = 100;

/// The scalar keys of the content, in the order the auth rules list them.
pub(crate) const SCALAR_KEYS: [&str; 7] = [
    "users_default",
    "events_default",
    "state_default",
    "ban",
    "redact",
    "kick",
    "invite",
];

/// The parsed content of an `m.room.power_levels` event, with the spec's
/// defaults filled in for absent keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PowerLevels {
    pub users: BTreeMap<String, i64>,
    pub users_default: i64,
    pub events: BTreeMap<String, i64>,
    pub events_default: i64,
    pub state_default: i64,
    pub ban: i64,
    pub kick: i64,
    pub invite: i64,
    pub redact: i64,
    /// `notifications.room`: the level needed to trigger an `@room` notification.
    pub notifications_room: i64,
}

impl Default for PowerLevels {
    /// The levels an `m.room.power_levels` event with empty content means.
    fn default() -> Self {
        PowerLevels {
            users: BTreeMap::new(),
            users_default: 0,
            events: BTreeMap::new(),
            events_default: 0,
            state_default: 50,
            ban: 50,
            kick: 50,
            invite: 0,
            redact: 50,
            notifications_room: 50,
        }
    }
}

/// A power level value: an integer (never a string or float in v10+) in the
/// canonical JSON range.
pub(crate) fn as_level(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .filter(|level| (MIN_POWER_LEVEL..=MAX_POWER_LEVEL).contains(level))
}

fn invalid(message: impl Into<String>) -> AuthError {
    AuthError::InvalidPowerLevels(message.into())
}

/// Parses an object of integer levels, refusing the first bad entry.
fn strict_level_map(
    value: &Value,
    field: &str,
    keys_are_users: bool,
) -> Result<BTreeMap<String, i64>, AuthError> {
    let Some(object) = value.as_object() else {
        return Err(invalid(format!("`{field}` must be an object")));
    };
    let mut levels = BTreeMap::new();
    for (key, raw) in object {
        if keys_are_users && !ids::is_valid_user_id(key) {
            return Err(invalid(format!(
                "`{field}` key {key:?} is not a valid user ID"
            )));
        }
        let Some(level) = as_level(raw) else {
            return Err(invalid(format!(
                "`{field}.{key}` must be an integer in the canonical JSON range"
            )));
        };
        levels.insert(key.clone(), level);
    }
    Ok(levels)
}

/// Parses an object of integer levels, skipping bad entries.
fn lenient_level_map(value: Option<&Value>) -> BTreeMap<String, i64> {
    value
        .and_then(Value::as_object)
        .map(|object| {
            object
                .iter()
                .filter_map(|(key, raw)| Some((key.clone(), as_level(raw)?)))
                .collect()
        })
        .unwrap_or_default()
}

impl PowerLevels {
    /// Parses and validates content under the v10+ rules (auth rules 9.1 to
    /// 9.3): every scalar present must be an integer, `events` and
    /// `notifications` must map to integers, and `users` must map valid user
    /// IDs to integers.
    pub fn from_content(content: &Value) -> Result<Self, AuthError> {
        let Some(object) = content.as_object() else {
            return Err(invalid("content must be an object"));
        };
        let mut levels = PowerLevels::default();
        for key in SCALAR_KEYS {
            let Some(raw) = object.get(key) else { continue };
            let Some(level) = as_level(raw) else {
                return Err(invalid(format!(
                    "`{key}` must be an integer in the canonical JSON range"
                )));
            };
            *levels.scalar_mut(key) = level;
        }
        if let Some(events) = object.get("events") {
            levels.events = strict_level_map(events, "events", false)?;
        }
        if let Some(notifications) = object.get("notifications") {
            let notifications = strict_level_map(notifications, "notifications", false)?;
            if let Some(room) = notifications.get("room") {
                levels.notifications_room = *room;
            }
        }
        if let Some(users) = object.get("users") {
            levels.users = strict_level_map(users, "users", true)?;
        }
        Ok(levels)
    }

    /// Parses content that is already in the room, never failing: entries
    /// that would not pass [`PowerLevels::from_content`] fall back to their
    /// defaults. Auth refuses such content on the way in, so this only
    /// matters for data written before validation existed.
    pub fn from_content_lenient(content: &Value) -> Self {
        let mut levels = PowerLevels::default();
        let Some(object) = content.as_object() else {
            return levels;
        };
        for key in SCALAR_KEYS {
            if let Some(level) = object.get(key).and_then(as_level) {
                *levels.scalar_mut(key) = level;
            }
        }
        levels.events = lenient_level_map(object.get("events"));
        levels.users = lenient_level_map(object.get("users"));
        if let Some(room) = lenient_level_map(object.get("notifications")).get("room") {
            levels.notifications_room = *room;
        }
        levels
    }

    /// What applies while the room has no power levels event: the creator
    /// has 100, everyone else 0, and every other key takes the default the
    /// `m.room.power_levels` schema gives "if there is no
    /// `m.room.power_levels` event" (so `state_default` is 50).
    pub fn creator_default(creator: &str) -> Self {
        let mut levels = PowerLevels::default();
        levels.users.insert(creator.to_owned(), CREATOR_LEVEL);
        levels
    }

    fn scalar_mut(&mut self, key: &str) -> &mut i64 {
        match key {
            "users_default" => &mut self.users_default,
            "events_default" => &mut self.events_default,
            "state_default" => &mut self.state_default,
            "ban" => &mut self.ban,
            "kick" => &mut self.kick,
            "invite" => &mut self.invite,
            // SCALAR_KEYS holds exactly these seven names, so this arm is "redact".
            _ => &mut self.redact,
        }
    }

    /// The user's level: their entry in `users`, else `users_default`.
    pub fn user_level(&self, user_id: &str) -> i64 {
        self.users
            .get(user_id)
            .copied()
            .unwrap_or(self.users_default)
    }

    /// The level needed to send an event of this type (the auth rules'
    /// "required power level"): its entry in `events`, else `state_default`
    /// for state events and `events_default` for the rest.
    pub fn event_level(&self, event_type: &str, is_state: bool) -> i64 {
        match self.events.get(event_type) {
            Some(level) => *level,
            None if is_state => self.state_default,
            None => self.events_default,
        }
    }

    /// The level needed to trigger a notification of this kind (`room` for
    /// `@room`). Kinds other than `room` are not kept and default to 50.
    pub fn notification_level(&self, key: &str) -> i64 {
        if key == "room" {
            self.notifications_room
        } else {
            50
        }
    }

    /// Whether the user may send an event of this type.
    pub fn can_send(&self, user_id: &str, event_type: &str, is_state: bool) -> bool {
        self.user_level(user_id) >= self.event_level(event_type, is_state)
    }

    /// The full content, every default written out.
    pub fn to_content(&self) -> Value {
        let users: Map<String, Value> = self
            .users
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let events: Map<String, Value> = self
            .events
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "users": users,
            "users_default": self.users_default,
            "events": events,
            "events_default": self.events_default,
            "state_default": self.state_default,
            "ban": self.ban,
            "kick": self.kick,
            "invite": self.invite,
            "redact": self.redact,
            "notifications": { "room": self.notifications_room },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_content_means_spec_defaults() {
        let levels = PowerLevels::from_content(&json!({})).unwrap();
        assert_eq!(levels, PowerLevels::default());
        assert_eq!(levels.state_default, 50);
        assert_eq!(levels.invite, 0);
        assert_eq!(levels.user_level("@anyone:x"), 0);
        assert_eq!(levels.event_level("m.room.message", false), 0);
        assert_eq!(levels.event_level("m.room.topic", true), 50);
    }

    #[test]
    fn parses_full_content() {
        let content = json!({
            "users": {"@alice:x": 100, "@bob:x": 50},
            "users_default": 1,
            "events": {"m.room.name": 75, "m.room.message": 10},
            "events_default": 2,
            "state_default": 60,
            "ban": 70, "kick": 65, "invite": 5, "redact": 40,
            "notifications": {"room": 20, "other": 3}
        });
        let levels = PowerLevels::from_content(&content).unwrap();
        assert_eq!(levels.user_level("@alice:x"), 100);
        assert_eq!(levels.user_level("@carol:x"), 1);
        assert_eq!(levels.event_level("m.room.name", true), 75);
        assert_eq!(levels.event_level("m.room.message", false), 10);
        assert_eq!(levels.event_level("m.other", false), 2);
        assert_eq!(levels.event_level("m.other", true), 60);
        assert_eq!(
            (levels.ban, levels.kick, levels.invite, levels.redact),
            (70, 65, 5, 40)
        );
        assert_eq!(levels.notifications_room, 20);
        assert_eq!(levels.notification_level("room"), 20);
        assert!(levels.can_send("@bob:x", "m.room.message", false));
        assert!(!levels.can_send("@carol:x", "m.room.name", true));
    }

    #[test]
    fn refuses_strings_floats_and_bad_users() {
        for content in [
            json!({"ban": "50"}),
            json!({"kick": 50.5}),
            json!({"invite": null}),
            json!({"events": {"m.room.name": "50"}}),
            json!({"events": []}),
            json!({"notifications": {"room": true}}),
            json!({"users": {"not-a-user": 10}}),
            json!({"users": {"@alice:x": "100"}}),
            json!({"users": ["@alice:x"]}),
            json!({"state_default": 9_007_199_254_740_992_i64}),
            json!([]),
        ] {
            assert!(
                matches!(
                    PowerLevels::from_content(&content),
                    Err(AuthError::InvalidPowerLevels(_))
                ),
                "{content}"
            );
        }
        assert!(PowerLevels::from_content(&json!({"state_default": MAX_POWER_LEVEL})).is_ok());
        assert!(PowerLevels::from_content(&json!({"users_default": MIN_POWER_LEVEL})).is_ok());
    }

    #[test]
    fn lenient_parse_skips_bad_entries() {
        let content =
            json!({"ban": "10", "kick": 20, "users": {"@a:x": 5, "@b:x": "7"}, "events": 3});
        let levels = PowerLevels::from_content_lenient(&content);
        assert_eq!(levels.ban, 50);
        assert_eq!(levels.kick, 20);
        assert_eq!(levels.user_level("@a:x"), 5);
        assert_eq!(levels.user_level("@b:x"), 0);
        assert!(levels.events.is_empty());
        assert_eq!(
            PowerLevels::from_content_lenient(&json!("nope")),
            PowerLevels::default()
        );
    }

    #[test]
    fn creator_default_gives_creator_100() {
        let levels = PowerLevels::creator_default("@alice:x");
        assert_eq!(levels.user_level("@alice:x"), 100);
        assert_eq!(levels.user_level("@bob:x"), 0);
        assert_eq!(levels.state_default, 50);
        assert_eq!(levels.events_default, 0);
    }

    #[test]
    fn content_round_trips() {
        let mut levels = PowerLevels::creator_default("@alice:x");
        levels.events.insert("m.room.name".into(), 50);
        levels.notifications_room = 10;
        let content = levels.to_content();
        assert_eq!(content["users"]["@alice:x"], 100);
        assert_eq!(content["notifications"]["room"], 10);
        assert_eq!(PowerLevels::from_content(&content).unwrap(), levels);
    }
}
