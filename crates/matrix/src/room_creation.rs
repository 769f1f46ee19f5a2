//! The plan for `POST /createRoom`: validating the request and producing,
//! in the order the spec prescribes, the state events that make the room.
//!
//! Owns: what the request means (presets, default power levels, overrides,
//! the precedence of `initial_state`, `name` and `topic`). Never: mints the
//! room ID, reserves the alias, sends events or checks them against the
//! auth rules; the server does that with the plan, event by event, and the
//! invites afterwards.

use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::ids;
use crate::power_levels::{CREATOR_LEVEL, PowerLevels};
use crate::{DEFAULT_ROOM_VERSION, is_supported_room_version};

/// Why a `/createRoom` request was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CreateRoomError {
    #[error("room version {0:?} is not supported")]
    UnsupportedRoomVersion(String),
    #[error("invalid request: {0}")]
    BadJson(String),
    #[error("invalid parameter: {0}")]
    InvalidParam(String),
}

/// The three presets of the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

impl Preset {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "private_chat" => Some(Preset::PrivateChat),
            "trusted_private_chat" => Some(Preset::TrustedPrivateChat),
            "public_chat" => Some(Preset::PublicChat),
            _ => None,
        }
    }
}

/// One state event to send.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedEvent {
    pub event_type: String,
    pub state_key: String,
    pub content: Value,
}

/// Everything the server needs to create the room.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateRoomPlan {
    pub room_version: String,
    /// The state events, to be sent in this order.
    pub events: Vec<PlannedEvent>,
    /// Users to invite once the state is in, deduplicated, without the creator.
    pub invites: Vec<String>,
    /// Whether the invites are to set `is_direct`.
    pub is_direct: bool,
    /// The alias localpart to reserve on this server (`#l:server_name`).
    pub alias_localpart: Option<String>,
    pub preset: Preset,
    /// Whether `visibility` was `public`: the room goes in the room directory.
    pub publish_to_directory: bool,
}

fn bad_json(message: impl Into<String>) -> CreateRoomError {
    CreateRoomError::BadJson(message.into())
}

fn invalid_param(message: impl Into<String>) -> CreateRoomError {
    CreateRoomError::InvalidParam(message.into())
}

/// Typed access to the request's optional fields; `null` counts as absent.
struct Request<'a>(&'a Map<String, Value>);

impl<'a> Request<'a> {
    fn field(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, CreateRoomError> {
        self.field(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| bad_json(format!("`{key}` must be a string")))
            })
            .transpose()
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, CreateRoomError> {
        self.field(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| bad_json(format!("`{key}` must be a boolean")))
            })
            .transpose()
    }

    fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, CreateRoomError> {
        self.field(key)
            .map(|v| {
                v.as_object()
                    .ok_or_else(|| bad_json(format!("`{key}` must be an object")))
            })
            .transpose()
    }

    fn array(&self, key: &str) -> Result<&'a [Value], CreateRoomError> {
        match self.field(key) {
            None => Ok(&[]),
            Some(v) => v
                .as_array()
                .map(Vec::as_slice)
                .ok_or_else(|| bad_json(format!("`{key}` must be an array"))),
        }
    }
}

/// The events list, where a later event for the same `(type, state_key)`
/// replaces an earlier one. The first three events (create, the creator's
/// join, power levels) are never replaced in place: the rest of the room is
/// authorised against them, so an `initial_state` power levels event is
/// sent after them instead.
struct Events(Vec<PlannedEvent>);

const PINNED_EVENTS: usize = 3;

impl Events {
    fn push(&mut self, event_type: &str, state_key: &str, content: Value) {
        let replaced = self
            .0
            .iter()
            .enumerate()
            .skip(PINNED_EVENTS)
            .find(|(_, e)| e.event_type == event_type && e.state_key == state_key)
            .map(|(i, _)| i);
        if let Some(i) = replaced {
            self.0.remove(i);
        }
        self.0.push(PlannedEvent {
            event_type: event_type.to_owned(),
            state_key: state_key.to_owned(),
            content,
        });
    }
}

/// Event types whose default level is above `state_default`, because they
/// change who controls the room or how it can be read.
const ADMIN_EVENT_TYPES: [&str; 5] = [
    "m.room.power_levels",
    "m.room.history_visibility",
    "m.room.tombstone",
    "m.room.server_acl",
    "m.room.encryption",
];
const MODERATOR_EVENT_TYPES: [&str; 3] = ["m.room.name", "m.room.avatar", "m.room.canonical_alias"];

/// The default power levels content for a new room (before
/// `power_level_content_override`).
pub fn default_power_levels(creator: &str, preset: Preset, invites: &[String]) -> Value {
    let mut levels = PowerLevels::creator_default(creator);
    if preset == Preset::TrustedPrivateChat {
        for invitee in invites {
            levels.users.insert(invitee.clone(), CREATOR_LEVEL);
        }
    }
    for event_type in ADMIN_EVENT_TYPES {
        levels.events.insert(event_type.to_owned(), 100);
    }
    for event_type in MODERATOR_EVENT_TYPES {
        levels.events.insert(event_type.to_owned(), 50);
    }
    // Anyone can join a public room anyway, so there invites only serve
    // spammers; keep them to moderators.
    levels.invite = if preset == Preset::PublicChat { 50 } else { 0 };
    levels.to_content()
}

fn validate_alias_localpart(localpart: &str, server_name: &str) -> Result<(), CreateRoomError> {
    if localpart.is_empty() {
        return Err(invalid_param("room_alias_name is empty"));
    }
    if localpart
        .chars()
        .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(invalid_param(
            "room_alias_name may not contain ':', whitespace or control characters",
        ));
    }
    let alias = format!("#{localpart}:{server_name}");
    if !ids::is_valid_room_alias(&alias) {
        return Err(invalid_param(format!(
            "{alias:?} is not a valid room alias"
        )));
    }
    Ok(())
}

/// Validates a `/createRoom` request body and plans the room's events in
/// the spec's order: create, the creator's join, power levels, canonical
/// alias, preset events, `initial_state`, name, topic. Invites come back
/// separately, to be sent after all of these.
pub fn plan_create_room(
    creator: &str,
    server_name: &str,
    request: &Value,
) -> Result<CreateRoomPlan, CreateRoomError> {
    if !ids::is_valid_user_id(creator) {
        return Err(invalid_param(format!(
            "creator {creator:?} is not a valid user ID"
        )));
    }
    let request = Request(
        request
            .as_object()
            .ok_or_else(|| bad_json("the request body must be a JSON object"))?,
    );

    let room_version = request
        .string("room_version")?
        .unwrap_or(DEFAULT_ROOM_VERSION)
        .to_owned();
    if !is_supported_room_version(&room_version) {
        return Err(CreateRoomError::UnsupportedRoomVersion(room_version));
    }
    let publish_to_directory = match request.string("visibility")? {
        None | Some("private") => false,
        Some("public") => true,
        Some(other) => return Err(invalid_param(format!("unknown visibility {other:?}"))),
    };
    let preset = match request.string("preset")? {
        None if publish_to_directory => Preset::PublicChat,
        None => Preset::PrivateChat,
        Some(name) => {
            Preset::parse(name).ok_or_else(|| invalid_param(format!("unknown preset {name:?}")))?
        }
    };
    let is_direct = request.boolean("is_direct")?.unwrap_or(false);

    let mut invites: Vec<String> = Vec::new();
    for invitee in request.array("invite")? {
        let invitee = invitee
            .as_str()
            .ok_or_else(|| bad_json("`invite` must hold strings"))?;
        if !ids::is_valid_user_id(invitee) {
            return Err(invalid_param(format!("{invitee:?} is not a valid user ID")));
        }
        if invitee != creator && !invites.iter().any(|i| i == invitee) {
            invites.push(invitee.to_owned());
        }
    }
    if !request.array("invite_3pid")?.is_empty() {
        return Err(invalid_param("third-party invites are not supported"));
    }

    let alias_localpart = request.string("room_alias_name")?.map(str::to_owned);
    if let Some(localpart) = &alias_localpart {
        validate_alias_localpart(localpart, server_name)?;
    }

    // 1. The create event. The server owns `creator` and `room_version`.
    let mut create_content = request
        .object("creation_content")?
        .cloned()
        .unwrap_or_default();
    create_content.remove("creator");
    if room_version == "10" {
        create_content.insert("creator".into(), json!(creator));
    }
    create_content.insert("room_version".into(), json!(room_version));
    let mut events = Events(Vec::new());
    events.push("m.room.create", "", Value::Object(create_content));

    // 2. The creator joins; profile fields are the caller's to add.
    events.push("m.room.member", creator, json!({"membership": "join"}));

    // 3. Power levels, with the override applied key by key on top.
    let mut power_levels = default_power_levels(creator, preset, &invites);
    if let (Some(overrides), Some(content)) = (
        request.object("power_level_content_override")?,
        power_levels.as_object_mut(),
    ) {
        for (key, value) in overrides {
            content.insert(key.clone(), value.clone());
        }
    }
    PowerLevels::from_content(&power_levels)
        .map_err(|e| bad_json(format!("power_level_content_override: {e}")))?;
    events.push("m.room.power_levels", "", power_levels);

    // 4. The canonical alias.
    if let Some(localpart) = &alias_localpart {
        events.push(
            "m.room.canonical_alias",
            "",
            json!({"alias": format!("#{localpart}:{server_name}")}),
        );
    }

    // 5. Preset events.
    let (join_rule, guest_access) = match preset {
        Preset::PrivateChat | Preset::TrustedPrivateChat => ("invite", "can_join"),
        Preset::PublicChat => ("public", "forbidden"),
    };
    events.push("m.room.join_rules", "", json!({"join_rule": join_rule}));
    events.push(
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "shared"}),
    );
    events.push(
        "m.room.guest_access",
        "",
        json!({"guest_access": guest_access}),
    );

    // 6. initial_state, in order.
    for (i, entry) in request.array("initial_state")?.iter().enumerate() {
        let entry = Request(
            entry
                .as_object()
                .ok_or_else(|| bad_json(format!("initial_state[{i}] must be an object")))?,
        );
        let event_type = entry
            .string("type")?
            .ok_or_else(|| bad_json(format!("initial_state[{i}] needs a `type`")))?;
        let state_key = entry.string("state_key")?.unwrap_or("");
        let content = entry
            .object("content")?
            .ok_or_else(|| bad_json(format!("initial_state[{i}] needs a `content` object")))?;
        if event_type == "m.room.create" {
            return Err(invalid_param("initial_state may not contain m.room.create"));
        }
        events.push(event_type, state_key, Value::Object(content.clone()));
    }

    // 7. Name and topic, which beat initial_state.
    if let Some(name) = request.string("name")? {
        events.push("m.room.name", "", json!({"name": name}));
    }
    if let Some(topic) = request.string("topic")? {
        events.push(
            "m.room.topic",
            "",
            json!({"topic": topic, "m.topic": {"m.text": [{"body": topic, "mimetype": "text/plain"}]}}),
        );
    }

    Ok(CreateRoomPlan {
        room_version,
        events: events.0,
        invites,
        is_direct,
        alias_localpart,
        preset,
        publish_to_directory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth;
    use crate::state::RoomState;

    const ALICE: &str = "@alice:example.org";
    const BOB: &str = "@bob:example.org";
    const SERVER: &str = "example.org";

    fn plan(request: Value) -> CreateRoomPlan {
        plan_create_room(ALICE, SERVER, &request).unwrap()
    }

    fn order(plan: &CreateRoomPlan) -> Vec<(&str, &str)> {
        plan.events
            .iter()
            .map(|e| (e.event_type.as_str(), e.state_key.as_str()))
            .collect()
    }

    fn find<'a>(plan: &'a CreateRoomPlan, event_type: &str) -> &'a Value {
        &plan
            .events
            .iter()
            .rev()
            .find(|e| e.event_type == event_type)
            .unwrap()
            .content
    }

    #[test]
    fn minimal_request() {
        let plan = plan(json!({}));
        assert_eq!(plan.room_version, "11");
        assert_eq!(plan.preset, Preset::PrivateChat);
        assert!(!plan.publish_to_directory);
        assert!(!plan.is_direct);
        assert!(plan.invites.is_empty());
        assert_eq!(plan.alias_localpart, None);
        assert_eq!(
            order(&plan),
            vec![
                ("m.room.create", ""),
                ("m.room.member", ALICE),
                ("m.room.power_levels", ""),
                ("m.room.join_rules", ""),
                ("m.room.history_visibility", ""),
                ("m.room.guest_access", ""),
            ]
        );
        assert_eq!(find(&plan, "m.room.create"), &json!({"room_version": "11"}));
        assert_eq!(find(&plan, "m.room.member"), &json!({"membership": "join"}));
        assert_eq!(
            find(&plan, "m.room.join_rules"),
            &json!({"join_rule": "invite"})
        );
        assert_eq!(
            find(&plan, "m.room.guest_access"),
            &json!({"guest_access": "can_join"})
        );
        let levels = PowerLevels::from_content(find(&plan, "m.room.power_levels")).unwrap();
        assert_eq!(levels.user_level(ALICE), 100);
        assert_eq!(levels.invite, 0);
    }

    #[test]
    fn full_request_order() {
        let plan = plan(json!({
            "visibility": "public",
            "room_alias_name": "thepub",
            "name": "The Grand Duke Pub",
            "topic": "All about happy hour",
            "creation_content": {"m.federate": false, "creator": "@mallory:example.org"},
            "initial_state": [{"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
            "invite": [BOB, BOB, ALICE],
            "is_direct": true
        }));
        assert_eq!(
            order(&plan),
            vec![
                ("m.room.create", ""),
                ("m.room.member", ALICE),
                ("m.room.power_levels", ""),
                ("m.room.canonical_alias", ""),
                ("m.room.join_rules", ""),
                ("m.room.history_visibility", ""),
                ("m.room.guest_access", ""),
                ("m.room.encryption", ""),
                ("m.room.name", ""),
                ("m.room.topic", ""),
            ]
        );
        assert_eq!(plan.preset, Preset::PublicChat);
        assert!(plan.publish_to_directory);
        assert!(plan.is_direct);
        assert_eq!(plan.invites, vec![BOB.to_owned()]);
        assert_eq!(plan.alias_localpart.as_deref(), Some("thepub"));
        assert_eq!(
            find(&plan, "m.room.create"),
            &json!({"m.federate": false, "room_version": "11"})
        );
        assert_eq!(
            find(&plan, "m.room.canonical_alias"),
            &json!({"alias": "#thepub:example.org"})
        );
        assert_eq!(
            find(&plan, "m.room.join_rules"),
            &json!({"join_rule": "public"})
        );
        assert_eq!(
            find(&plan, "m.room.guest_access"),
            &json!({"guest_access": "forbidden"})
        );
        assert_eq!(
            find(&plan, "m.room.name"),
            &json!({"name": "The Grand Duke Pub"})
        );
        assert_eq!(find(&plan, "m.room.topic")["topic"], "All about happy hour");
        assert_eq!(
            find(&plan, "m.room.topic")["m.topic"]["m.text"][0]["mimetype"],
            "text/plain"
        );
        assert_eq!(
            PowerLevels::from_content(find(&plan, "m.room.power_levels"))
                .unwrap()
                .invite,
            50
        );
    }

    #[test]
    fn version_10_records_creator() {
        let plan = plan(json!({"room_version": "10", "creation_content": {"type": "m.space"}}));
        assert_eq!(plan.room_version, "10");
        assert_eq!(
            find(&plan, "m.room.create"),
            &json!({"creator": ALICE, "room_version": "10", "type": "m.space"})
        );
    }

    #[test]
    fn presets() {
        let trusted = plan(json!({"preset": "trusted_private_chat", "invite": [BOB]}));
        assert_eq!(trusted.preset, Preset::TrustedPrivateChat);
        let levels = PowerLevels::from_content(find(&trusted, "m.room.power_levels")).unwrap();
        assert_eq!(levels.user_level(BOB), 100);
        assert_eq!(
            find(&trusted, "m.room.join_rules"),
            &json!({"join_rule": "invite"})
        );
        assert_eq!(
            find(&trusted, "m.room.history_visibility"),
            &json!({"history_visibility": "shared"})
        );

        let private = plan(json!({"preset": "private_chat", "invite": [BOB]}));
        let levels = PowerLevels::from_content(find(&private, "m.room.power_levels")).unwrap();
        assert_eq!(levels.user_level(BOB), 0);

        // An explicit preset beats visibility.
        let public_private = plan(json!({"visibility": "public", "preset": "private_chat"}));
        assert_eq!(public_private.preset, Preset::PrivateChat);
        assert!(public_private.publish_to_directory);
        assert_eq!(
            find(&public_private, "m.room.join_rules"),
            &json!({"join_rule": "invite"})
        );

        let public = plan(json!({"preset": "public_chat"}));
        assert!(!public.publish_to_directory);
        assert_eq!(
            find(&public, "m.room.join_rules"),
            &json!({"join_rule": "public"})
        );
    }

    #[test]
    fn power_level_override_is_applied_on_top() {
        let plan = plan(
            json!({"power_level_content_override": {"events_default": 10, "users": {ALICE: 100, BOB: 50}}}),
        );
        let levels = PowerLevels::from_content(find(&plan, "m.room.power_levels")).unwrap();
        assert_eq!(levels.events_default, 10);
        assert_eq!(levels.user_level(BOB), 50);
        // Keys not overridden keep their defaults.
        assert_eq!(levels.event_level("m.room.power_levels", true), 100);
        assert!(matches!(
            plan_create_room(
                ALICE,
                SERVER,
                &json!({"power_level_content_override": {"ban": "50"}})
            ),
            Err(CreateRoomError::BadJson(_))
        ));
    }

    #[test]
    fn initial_state_overrides_presets_and_is_overridden_by_name() {
        let plan = plan(json!({
            "name": "Final",
            "initial_state": [
                {"type": "m.room.join_rules", "content": {"join_rule": "public"}},
                {"type": "m.room.name", "content": {"name": "Ignored"}},
                {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "invited"}},
                {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
                {"type": "org.example.custom", "state_key": "k", "content": {"a": 1}},
                {"type": "m.room.power_levels", "content": {"users": {ALICE: 100}}},
            ]
        }));
        assert_eq!(
            order(&plan),
            vec![
                ("m.room.create", ""),
                ("m.room.member", ALICE),
                ("m.room.power_levels", ""),
                ("m.room.guest_access", ""),
                ("m.room.join_rules", ""),
                ("m.room.history_visibility", ""),
                ("org.example.custom", "k"),
                ("m.room.power_levels", ""),
                ("m.room.name", ""),
            ]
        );
        assert_eq!(
            find(&plan, "m.room.join_rules"),
            &json!({"join_rule": "public"})
        );
        assert_eq!(
            find(&plan, "m.room.history_visibility"),
            &json!({"history_visibility": "joined"})
        );
        assert_eq!(find(&plan, "m.room.name"), &json!({"name": "Final"}));
    }

    #[test]
    fn errors() {
        use CreateRoomError as E;
        let err = |request: Value| plan_create_room(ALICE, SERVER, &request).unwrap_err();
        assert_eq!(
            err(json!({"room_version": "9"})),
            E::UnsupportedRoomVersion("9".into())
        );
        assert!(matches!(err(json!({"room_version": 11})), E::BadJson(_)));
        assert!(matches!(err(json!([])), E::BadJson(_)));
        assert!(matches!(err(json!({"name": 5})), E::BadJson(_)));
        assert!(matches!(err(json!({"is_direct": "yes"})), E::BadJson(_)));
        assert!(matches!(
            err(json!({"invite": "@bob:example.org"})),
            E::BadJson(_)
        ));
        assert!(matches!(err(json!({"invite": [5]})), E::BadJson(_)));
        assert!(matches!(
            err(json!({"invite": ["bob"]})),
            E::InvalidParam(_)
        ));
        assert!(matches!(
            err(json!({"invite_3pid": [{"medium": "email"}]})),
            E::InvalidParam(_)
        ));
        assert!(matches!(
            err(json!({"creation_content": []})),
            E::BadJson(_)
        ));
        assert!(matches!(
            err(json!({"power_level_content_override": 1})),
            E::BadJson(_)
        ));
        assert!(matches!(err(json!({"initial_state": {}})), E::BadJson(_)));
        assert!(matches!(
            err(json!({"initial_state": [{"content": {}}]})),
            E::BadJson(_)
        ));
        assert!(matches!(
            err(json!({"initial_state": [{"type": "x"}]})),
            E::BadJson(_)
        ));
        assert!(matches!(
            err(json!({"initial_state": [{"type": "x", "content": {}, "state_key": 1}]})),
            E::BadJson(_)
        ));
        assert!(matches!(
            err(json!({"initial_state": [{"type": "m.room.create", "content": {}}]})),
            E::InvalidParam(_)
        ));
        assert!(matches!(
            err(json!({"visibility": "secret"})),
            E::InvalidParam(_)
        ));
        assert!(matches!(
            err(json!({"preset": "party"})),
            E::InvalidParam(_)
        ));
        assert!(matches!(
            err(json!({"room_alias_name": "a:b"})),
            E::InvalidParam(_)
        ));
        assert!(matches!(
            err(json!({"room_alias_name": ""})),
            E::InvalidParam(_)
        ));
        assert!(matches!(
            err(json!({"room_alias_name": "a b"})),
            E::InvalidParam(_)
        ));
        assert!(matches!(
            err(json!({"room_alias_name": "a".repeat(250)})),
            E::InvalidParam(_)
        ));
        assert!(matches!(
            plan_create_room("alice", SERVER, &json!({})),
            Err(E::InvalidParam(_))
        ));
        // Nulls are absences, and empty invite_3pid is fine.
        assert!(
            plan_create_room(
                ALICE,
                SERVER,
                &json!({"name": null, "invite": null, "invite_3pid": []})
            )
            .is_ok()
        );
    }

    /// The plan, sent event by event through the auth rules, builds a room.
    #[test]
    fn plan_passes_auth() {
        for request in [
            json!({"preset": "public_chat", "room_alias_name": "pub", "name": "n", "topic": "t", "invite": [BOB]}),
            json!({"preset": "trusted_private_chat", "invite": [BOB], "room_version": "10"}),
            json!({"initial_state": [{"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
        ] {
            let plan = plan(request);
            let mut state = RoomState::new();
            for planned in &plan.events {
                let event = json!({
                    "type": planned.event_type,
                    "state_key": planned.state_key,
                    "sender": ALICE,
                    "room_id": "!new:example.org",
                    "content": planned.content,
                });
                auth::check(&state, &event).unwrap_or_else(|e| panic!("{event}: {e}"));
                state.insert(event);
            }
            for invitee in &plan.invites {
                let invite = json!({"type": "m.room.member", "state_key": invitee, "sender": ALICE, "room_id": "!new:example.org", "content": {"membership": "invite", "is_direct": plan.is_direct}});
                auth::check(&state, &invite).unwrap();
                state.insert(invite);
                let join = json!({"type": "m.room.member", "state_key": invitee, "sender": invitee, "room_id": "!new:example.org", "content": {"membership": "join"}});
                auth::check(&state, &join).unwrap();
            }
        }
    }
}
