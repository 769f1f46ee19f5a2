//! The authorization rules of room versions 10 and 11, checked against a
//! room's current state, plus the extra check that decides whether a
//! redaction is applied.
//!
//! Owns: whether an event may enter a room. Never: checks signatures or
//! hashes, selects `auth_events`, resolves state, or supports third-party
//! invites; there is no federation, every event is ours, and each room has a
//! single linear history, so "the room state before the event" is simply the
//! current state. Where the spec rule is about something federation-only
//! (rule 2, signatures of `join_authorised_via_users_server`) the rule is
//! replaced by its single-server equivalent, noted where it happens.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use thiserror::Error;

use crate::ids;
use crate::is_supported_room_version;
use crate::power_levels::{PowerLevels, SCALAR_KEYS, as_level};
use crate::state::{RoomState, str_field};

/// Why an event was refused. Each variant is one way of failing.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum AuthError {
    #[error("malformed event: {0}")]
    MalformedEvent(String),
    #[error("the room has already been created")]
    RoomAlreadyCreated,
    #[error("the room has no m.room.create event")]
    NoCreateEvent,
    #[error("room version {0:?} is not supported")]
    UnsupportedRoomVersion(String),
    #[error("the room ID and the creator are on different servers")]
    CreateDomainMismatch,
    #[error("the event belongs to a different room")]
    WrongRoom,
    #[error("the room does not federate and the sender is on another server")]
    NotFederated,
    #[error("the sender is not joined to the room")]
    NotInRoom,
    #[error("insufficient power level: {needed} needed, sender has {has}")]
    InsufficientPowerLevel { needed: i64, has: i64 },
    #[error("the target user's power level ({target}) is not below the sender's ({sender})")]
    TargetPowerTooHigh { target: i64, sender: i64 },
    #[error("the sender is banned from the room")]
    Banned,
    #[error("the target user is banned from the room")]
    TargetBanned,
    #[error("the target user is already joined")]
    TargetAlreadyJoined,
    #[error("the sender has not been invited to the room")]
    NotInvited,
    #[error("the join rule {0:?} does not allow joining")]
    JoinRuleForbids(String),
    #[error("the join rule {0:?} does not allow knocking")]
    KnockNotAllowed(String),
    #[error("invalid membership change: {0}")]
    InvalidMembership(String),
    #[error("the state key {0:?} is another user's ID")]
    StateKeyNotSender(String),
    #[error("third-party invites are not supported")]
    ThirdPartyInviteUnsupported,
    #[error("invalid power levels: {0}")]
    InvalidPowerLevels(String),
    #[error("power level change not allowed: {0}")]
    PowerLevelChangeForbidden(String),
    #[error("the event to redact is not known")]
    RedactionTargetNotFound,
}

fn malformed(message: impl Into<String>) -> AuthError {
    AuthError::MalformedEvent(message.into())
}

/// The fields every event needs, pulled out once and type-checked.
struct Parts<'a> {
    event_type: &'a str,
    sender: &'a str,
    state_key: Option<&'a str>,
    content: &'a Value,
}

fn parts(event: &Value) -> Result<Parts<'_>, AuthError> {
    if !event.is_object() {
        return Err(malformed("an event must be a JSON object"));
    }
    let event_type =
        str_field(event, "type").ok_or_else(|| malformed("`type` must be a string"))?;
    let sender =
        str_field(event, "sender").ok_or_else(|| malformed("`sender` must be a string"))?;
    if !ids::is_valid_user_id(sender) {
        return Err(malformed(format!(
            "sender {sender:?} is not a valid user ID"
        )));
    }
    let content = event
        .get("content")
        .filter(|c| c.is_object())
        .ok_or_else(|| malformed("`content` must be an object"))?;
    let state_key = match event.get("state_key") {
        None => None,
        Some(Value::String(key)) => Some(key.as_str()),
        Some(_) => return Err(malformed("`state_key` must be a string")),
    };
    Ok(Parts {
        event_type,
        sender,
        state_key,
        content,
    })
}

/// Checks `event` against the authorization rules, the room being in
/// `state` just before it.
pub fn check(state: &RoomState, event: &Value) -> Result<(), AuthError> {
    let parts = parts(event)?;
    if parts.event_type == "m.room.create" {
        return check_create(state, event, &parts);
    }

    let create = state.create_event().ok_or(AuthError::NoCreateEvent)?;
    let version = state.room_version();
    if !is_supported_room_version(version) {
        return Err(AuthError::UnsupportedRoomVersion(version.to_owned()));
    }
    // Rule 2.5's intent without auth_events: the event must be for this room.
    if let (Some(room_id), Some(expected)) = (str_field(event, "room_id"), state.room_id())
        && room_id != expected
    {
        return Err(AuthError::WrongRoom);
    }
    // Rule 3.
    let federates =
        create.get("content").and_then(|c| c.get("m.federate")) != Some(&Value::Bool(false));
    if !federates
        && ids::server_name(parts.sender) != str_field(create, "sender").and_then(ids::server_name)
    {
        return Err(AuthError::NotFederated);
    }

    // Rule 4.
    if parts.event_type == "m.room.member" {
        return check_member(state, &parts);
    }

    // Rule 5.
    if !state.is_joined(parts.sender) {
        return Err(AuthError::NotInRoom);
    }
    // Rule 6: third-party invites are out of scope, so their events are too.
    if parts.event_type == "m.room.third_party_invite" {
        return Err(AuthError::ThirdPartyInviteUnsupported);
    }
    let levels = state.power_levels();
    let sender_level = levels.user_level(parts.sender);
    // Rule 7.
    let needed = levels.event_level(parts.event_type, parts.state_key.is_some());
    if needed > sender_level {
        return Err(AuthError::InsufficientPowerLevel {
            needed,
            has: sender_level,
        });
    }
    // Rule 8.
    if let Some(state_key) = parts.state_key
        && state_key.starts_with('@')
        && state_key != parts.sender
    {
        return Err(AuthError::StateKeyNotSender(state_key.to_owned()));
    }
    // Rule 9.
    if parts.event_type == "m.room.power_levels" {
        check_power_levels_change(state, parts.sender, sender_level, parts.content)?;
    }
    Ok(())
}

/// Rule 1. "Has no prev_events" becomes "the room has no state yet", since
/// our history is linear. Deviation: a create event without `room_version`
/// would make a version 1 room, whose rules this crate does not implement,
/// so it is refused instead of allowed.
fn check_create(state: &RoomState, event: &Value, parts: &Parts<'_>) -> Result<(), AuthError> {
    if !state.is_empty() {
        return Err(AuthError::RoomAlreadyCreated);
    }
    if parts.state_key != Some("") {
        return Err(malformed("m.room.create needs an empty state_key"));
    }
    let room_id =
        str_field(event, "room_id").ok_or_else(|| malformed("m.room.create needs a room_id"))?;
    if ids::server_name(room_id) != ids::server_name(parts.sender) {
        return Err(AuthError::CreateDomainMismatch);
    }
    let version = match parts.content.get("room_version") {
        None => "1",
        Some(Value::String(version)) => version.as_str(),
        Some(_) => return Err(malformed("`room_version` must be a string")),
    };
    if !is_supported_room_version(version) {
        return Err(AuthError::UnsupportedRoomVersion(version.to_owned()));
    }
    if version == "10" && str_field(parts.content, "creator").is_none() {
        return Err(malformed(
            "room version 10 needs `creator` in m.room.create content",
        ));
    }
    Ok(())
}

/// The creator as rule 4.3.1 names them: `content.creator` in v10, the
/// create event's sender in v11.
fn creator_for_first_join(state: &RoomState) -> Option<&str> {
    let create = state.create_event()?;
    if state.room_version() == "10" {
        create.get("content").and_then(|c| str_field(c, "creator"))
    } else {
        str_field(create, "sender")
    }
}

/// The error for a kick or ban that the sender may not perform.
fn over_target_error(
    levels: &PowerLevels,
    needed: i64,
    sender_level: i64,
    target: &str,
) -> AuthError {
    if sender_level < needed {
        AuthError::InsufficientPowerLevel {
            needed,
            has: sender_level,
        }
    } else {
        AuthError::TargetPowerTooHigh {
            target: levels.user_level(target),
            sender: sender_level,
        }
    }
}

/// Rule 4.
fn check_member(state: &RoomState, parts: &Parts<'_>) -> Result<(), AuthError> {
    let target = parts
        .state_key
        .ok_or_else(|| malformed("m.room.member needs a state_key"))?;
    let membership = str_field(parts.content, "membership")
        .ok_or_else(|| malformed("m.room.member content needs a string `membership`"))?;
    if !ids::is_valid_user_id(target) {
        return Err(malformed(format!(
            "member state_key {target:?} is not a valid user ID"
        )));
    }
    let sender = parts.sender;
    let sender_membership = state.membership(sender);
    let target_membership = state.membership(target);
    let levels = state.power_levels();
    let sender_level = levels.user_level(sender);
    let target_level = levels.user_level(target);
    let join_rule = state.join_rule();

    match membership {
        "join" => {
            // Rule 4.3.2 is checked first so the creator's join, too, can
            // only be sent by the creator.
            if sender != target {
                return Err(AuthError::InvalidMembership(
                    "only the user themselves can join".into(),
                ));
            }
            // Rule 4.3.1: the only state so far is the create event.
            if state.len() == 1 && creator_for_first_join(state) == Some(target) {
                return Ok(());
            }
            if sender_membership == Some("ban") {
                return Err(AuthError::Banned);
            }
            let invited_or_joined = matches!(sender_membership, Some("invite") | Some("join"));
            match join_rule {
                // Restricted rules are treated as invite-only: the
                // authorising user in `join_authorised_via_users_server`
                // cannot be trusted without the signature federation
                // would carry, since any client could write it.
                "invite" | "knock" | "restricted" | "knock_restricted" => {
                    if invited_or_joined {
                        Ok(())
                    } else {
                        Err(AuthError::NotInvited)
                    }
                }
                "public" => Ok(()),
                other => Err(AuthError::JoinRuleForbids(other.to_owned())),
            }
        }
        "invite" => {
            if parts.content.get("third_party_invite").is_some() {
                return Err(AuthError::ThirdPartyInviteUnsupported);
            }
            if sender_membership != Some("join") {
                return Err(AuthError::NotInRoom);
            }
            match target_membership {
                Some("join") => return Err(AuthError::TargetAlreadyJoined),
                Some("ban") => return Err(AuthError::TargetBanned),
                _ => {}
            }
            if sender_level >= levels.invite {
                Ok(())
            } else {
                Err(AuthError::InsufficientPowerLevel {
                    needed: levels.invite,
                    has: sender_level,
                })
            }
        }
        "leave" => {
            if sender == target {
                return match sender_membership {
                    Some("invite") | Some("join") | Some("knock") => Ok(()),
                    Some("ban") => Err(AuthError::Banned),
                    _ => Err(AuthError::NotInRoom),
                };
            }
            if sender_membership != Some("join") {
                return Err(AuthError::NotInRoom);
            }
            if target_membership == Some("ban") && sender_level < levels.ban {
                return Err(AuthError::InsufficientPowerLevel {
                    needed: levels.ban,
                    has: sender_level,
                });
            }
            if sender_level >= levels.kick && target_level < sender_level {
                Ok(())
            } else {
                Err(over_target_error(
                    &levels,
                    levels.kick,
                    sender_level,
                    target,
                ))
            }
        }
        "ban" => {
            if sender_membership != Some("join") {
                return Err(AuthError::NotInRoom);
            }
            if sender_level >= levels.ban && target_level < sender_level {
                Ok(())
            } else {
                Err(over_target_error(&levels, levels.ban, sender_level, target))
            }
        }
        "knock" => {
            if !matches!(join_rule, "knock" | "knock_restricted") {
                return Err(AuthError::KnockNotAllowed(join_rule.to_owned()));
            }
            if sender != target {
                return Err(AuthError::InvalidMembership(
                    "only the user themselves can knock".into(),
                ));
            }
            match sender_membership {
                Some("ban") => Err(AuthError::Banned),
                Some(current @ ("invite" | "join")) => Err(AuthError::InvalidMembership(format!(
                    "cannot knock while {current}"
                ))),
                _ => Ok(()),
            }
        }
        other => Err(AuthError::InvalidMembership(format!(
            "unknown membership {other:?}"
        ))),
    }
}

/// The integer levels of one object-valued key (`events`, `notifications`,
/// `users`) of power levels content; bad or absent entries count as absent.
fn level_map(content: Option<&Value>, key: &str) -> BTreeMap<String, i64> {
    content
        .and_then(|c| c.get(key))
        .and_then(Value::as_object)
        .map(|object| {
            object
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), as_level(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

fn forbidden_change(message: String) -> AuthError {
    AuthError::PowerLevelChangeForbidden(message)
}

/// Rule 9: the new content must be well formed, and nobody may touch a
/// level above their own or grant more than they have.
fn check_power_levels_change(
    state: &RoomState,
    sender: &str,
    sender_level: i64,
    new_content: &Value,
) -> Result<(), AuthError> {
    // Rules 9.1 to 9.3.
    PowerLevels::from_content(new_content)?;
    // Rule 9.4.
    let Some(old_content) = state.content("m.room.power_levels", "") else {
        return Ok(());
    };

    // Rule 9.5.
    for key in SCALAR_KEYS {
        let old = old_content.get(key).and_then(as_level);
        let new = new_content.get(key).and_then(as_level);
        if old == new {
            continue;
        }
        if let Some(old) = old
            && old > sender_level
        {
            return Err(forbidden_change(format!(
                "`{key}` is {old}, above the sender's level {sender_level}"
            )));
        }
        if let Some(new) = new
            && new > sender_level
        {
            return Err(forbidden_change(format!(
                "`{key}` cannot be raised to {new}, above the sender's level {sender_level}"
            )));
        }
    }

    // Rules 9.6 and 9.7.
    for field in ["events", "notifications"] {
        let old = level_map(Some(&old_content), field);
        let new = level_map(Some(new_content), field);
        for key in old.keys().chain(new.keys()).collect::<BTreeSet<_>>() {
            let (before, after) = (old.get(key), new.get(key));
            if before == after {
                continue;
            }
            if let Some(&before) = before
                && before > sender_level
            {
                return Err(forbidden_change(format!(
                    "`{field}.{key}` is {before}, above the sender's level {sender_level}"
                )));
            }
            if let Some(&after) = after
                && after > sender_level
            {
                return Err(forbidden_change(format!(
                    "`{field}.{key}` cannot be set to {after}, above the sender's level {sender_level}"
                )));
            }
        }
    }

    // Rules 9.8 and 9.9.
    let old = level_map(Some(&old_content), "users");
    let new = level_map(Some(new_content), "users");
    for user in old.keys().chain(new.keys()).collect::<BTreeSet<_>>() {
        let (before, after) = (old.get(user), new.get(user));
        if before == after {
            continue;
        }
        if let Some(&before) = before
            && user != sender
            && before >= sender_level
        {
            return Err(forbidden_change(format!(
                "{user} has level {before}, not below the sender's level {sender_level}"
            )));
        }
        if let Some(&after) = after
            && after > sender_level
        {
            return Err(forbidden_change(format!(
                "{user} cannot be given level {after}, above the sender's level {sender_level}"
            )));
        }
    }
    Ok(())
}

/// The event ID a redaction targets: `content.redacts` (room version 11) or
/// the top-level `redacts` (earlier versions).
pub fn redaction_target_id(redaction: &Value) -> Option<&str> {
    redaction
        .get("content")
        .and_then(|c| str_field(c, "redacts"))
        .or_else(|| str_field(redaction, "redacts"))
}

/// Whether a redaction that passed [`check`] should actually be applied
/// ("Handling redactions"). The spec's second condition, "same server as
/// the original sender", would let every local user redact every event on a
/// single server, so it becomes "same user": a redaction is applied when
/// its sender has the redact level or sent the target themselves.
pub fn check_redaction(
    state: &RoomState,
    redaction: &Value,
    target: Option<&Value>,
) -> Result<(), AuthError> {
    let parts = parts(redaction)?;
    if parts.event_type != "m.room.redaction" {
        return Err(malformed("not an m.room.redaction event"));
    }
    let target_id =
        redaction_target_id(redaction).ok_or_else(|| malformed("the redaction names no event"))?;
    if !ids::is_valid_event_id(target_id) {
        return Err(malformed(format!("{target_id:?} is not a valid event ID")));
    }
    let target = target.ok_or(AuthError::RedactionTargetNotFound)?;
    if let Some(event_id) = str_field(target, "event_id")
        && event_id != target_id
    {
        return Err(malformed(
            "the given target is not the event the redaction names",
        ));
    }
    if let (Some(redaction_room), Some(target_room)) = (
        str_field(redaction, "room_id"),
        str_field(target, "room_id"),
    ) && redaction_room != target_room
    {
        return Err(AuthError::WrongRoom);
    }
    if str_field(target, "sender") == Some(parts.sender) {
        return Ok(());
    }
    let levels = state.power_levels();
    let has = levels.user_level(parts.sender);
    if has >= levels.redact {
        Ok(())
    } else {
        Err(AuthError::InsufficientPowerLevel {
            needed: levels.redact,
            has,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROOM: &str = "!room:x";
    const ALICE: &str = "@alice:x";
    const BOB: &str = "@bob:x";
    const CAROL: &str = "@carol:x";
    const MALLORY: &str = "@mallory:x";

    fn ev(event_type: &str, sender: &str, state_key: Option<&str>, content: Value) -> Value {
        let mut event =
            json!({"type": event_type, "sender": sender, "room_id": ROOM, "content": content});
        if let Some(key) = state_key {
            event["state_key"] = json!(key);
        }
        event
    }

    fn member(sender: &str, target: &str, membership: &str) -> Value {
        ev(
            "m.room.member",
            sender,
            Some(target),
            json!({"membership": membership}),
        )
    }

    fn create(version: &str) -> Value {
        let mut content = json!({"room_version": version});
        if version == "10" {
            content["creator"] = json!(ALICE);
        }
        ev("m.room.create", ALICE, Some(""), content)
    }

    /// Inserts the event after checking it is allowed.
    fn apply(state: &mut RoomState, event: Value) {
        check(state, &event).unwrap_or_else(|e| panic!("{event} refused: {e}"));
        state.insert(event);
    }

    /// A v11 room where Alice (100) and Bob (50, a moderator) are joined,
    /// Carol (0) is joined, with the given join rule.
    fn room_with(join_rule: &str) -> RoomState {
        let mut state = RoomState::new();
        apply(&mut state, create("11"));
        apply(&mut state, member(ALICE, ALICE, "join"));
        apply(
            &mut state,
            ev(
                "m.room.power_levels",
                ALICE,
                Some(""),
                json!({"users": {ALICE: 100, BOB: 50}, "events": {"m.room.power_levels": 100}}),
            ),
        );
        apply(
            &mut state,
            ev(
                "m.room.join_rules",
                ALICE,
                Some(""),
                json!({"join_rule": join_rule}),
            ),
        );
        for user in [BOB, CAROL] {
            apply(&mut state, member(ALICE, user, "invite"));
            apply(&mut state, member(user, user, "join"));
        }
        state
    }

    #[test]
    fn create_must_come_first_and_only_once() {
        let state = RoomState::new();
        assert_eq!(check(&state, &create("11")), Ok(()));
        assert_eq!(check(&state, &create("10")), Ok(()));
        let room = room_with("invite");
        assert_eq!(
            check(&room, &create("11")),
            Err(AuthError::RoomAlreadyCreated)
        );
        assert_eq!(
            check(&state, &member(ALICE, ALICE, "join")),
            Err(AuthError::NoCreateEvent)
        );
    }

    #[test]
    fn create_validation() {
        let state = RoomState::new();
        let mut other_domain = create("11");
        other_domain["room_id"] = json!("!room:elsewhere");
        assert_eq!(
            check(&state, &other_domain),
            Err(AuthError::CreateDomainMismatch)
        );
        assert_eq!(
            check(
                &state,
                &ev(
                    "m.room.create",
                    ALICE,
                    Some(""),
                    json!({"room_version": "9"})
                )
            ),
            Err(AuthError::UnsupportedRoomVersion("9".into()))
        );
        assert_eq!(
            check(&state, &ev("m.room.create", ALICE, Some(""), json!({}))),
            Err(AuthError::UnsupportedRoomVersion("1".into()))
        );
        assert!(matches!(
            check(
                &state,
                &ev(
                    "m.room.create",
                    ALICE,
                    Some(""),
                    json!({"room_version": "10"})
                )
            ),
            Err(AuthError::MalformedEvent(_))
        ));
        assert!(matches!(
            check(
                &state,
                &ev(
                    "m.room.create",
                    ALICE,
                    Some("x"),
                    json!({"room_version": "11"})
                )
            ),
            Err(AuthError::MalformedEvent(_))
        ));
        assert!(matches!(
            check(
                &state,
                &ev("m.room.create", ALICE, None, json!({"room_version": "11"}))
            ),
            Err(AuthError::MalformedEvent(_))
        ));
    }

    #[test]
    fn creator_first_join() {
        for version in ["10", "11"] {
            let mut state = RoomState::new();
            apply(&mut state, create(version));
            assert_eq!(
                check(&state, &member(BOB, BOB, "join")),
                Err(AuthError::NotInvited)
            );
            assert!(matches!(
                check(&state, &member(BOB, ALICE, "join")),
                Err(AuthError::InvalidMembership(_))
            ));
            assert_eq!(check(&state, &member(ALICE, ALICE, "join")), Ok(()));
        }
    }

    #[test]
    fn stranger_cannot_join_invite_only_room() {
        let state = room_with("invite");
        assert_eq!(
            check(&state, &member(MALLORY, MALLORY, "join")),
            Err(AuthError::NotInvited)
        );
        // Restricted rooms behave like invite-only ones, whatever the join claims.
        let state = room_with("restricted");
        let mut join = member(MALLORY, MALLORY, "join");
        join["content"]["join_authorised_via_users_server"] = json!(ALICE);
        assert_eq!(check(&state, &join), Err(AuthError::NotInvited));
        // Unknown join rules ("private" is reserved) admit nobody, not even the invited.
        let mut state = room_with("invite");
        apply(
            &mut state,
            ev(
                "m.room.join_rules",
                ALICE,
                Some(""),
                json!({"join_rule": "private"}),
            ),
        );
        apply(&mut state, member(ALICE, MALLORY, "invite"));
        assert_eq!(
            check(&state, &member(MALLORY, MALLORY, "join")),
            Err(AuthError::JoinRuleForbids("private".into()))
        );
    }

    #[test]
    fn invited_user_can_join() {
        for rule in ["invite", "knock", "restricted", "knock_restricted"] {
            let mut state = room_with(rule);
            apply(&mut state, member(ALICE, MALLORY, "invite"));
            assert_eq!(
                check(&state, &member(MALLORY, MALLORY, "join")),
                Ok(()),
                "{rule}"
            );
        }
    }

    #[test]
    fn anyone_can_join_public_room_but_not_for_others() {
        let state = room_with("public");
        assert_eq!(check(&state, &member(MALLORY, MALLORY, "join")), Ok(()));
        assert!(matches!(
            check(&state, &member(MALLORY, "@dave:x", "join")),
            Err(AuthError::InvalidMembership(_))
        ));
    }

    #[test]
    fn banned_user_cannot_join() {
        let mut state = room_with("public");
        apply(&mut state, member(ALICE, MALLORY, "ban"));
        assert_eq!(
            check(&state, &member(MALLORY, MALLORY, "join")),
            Err(AuthError::Banned)
        );
        assert_eq!(
            check(&state, &member(ALICE, MALLORY, "invite")),
            Err(AuthError::TargetBanned)
        );
        assert_eq!(
            check(&state, &member(MALLORY, MALLORY, "leave")),
            Err(AuthError::Banned)
        );
    }

    #[test]
    fn invites() {
        let mut state = room_with("invite");
        assert_eq!(check(&state, &member(CAROL, MALLORY, "invite")), Ok(()));
        assert_eq!(
            check(&state, &member(MALLORY, "@dave:x", "invite")),
            Err(AuthError::NotInRoom)
        );
        assert_eq!(
            check(&state, &member(ALICE, BOB, "invite")),
            Err(AuthError::TargetAlreadyJoined)
        );
        let mut third_party = member(ALICE, MALLORY, "invite");
        third_party["content"]["third_party_invite"] = json!({"signed": {}});
        assert_eq!(
            check(&state, &third_party),
            Err(AuthError::ThirdPartyInviteUnsupported)
        );
        apply(
            &mut state,
            ev(
                "m.room.power_levels",
                ALICE,
                Some(""),
                json!({"users": {ALICE: 100, BOB: 50}, "invite": 50, "events": {"m.room.power_levels": 100}}),
            ),
        );
        assert_eq!(
            check(&state, &member(CAROL, MALLORY, "invite")),
            Err(AuthError::InsufficientPowerLevel { needed: 50, has: 0 })
        );
        assert_eq!(check(&state, &member(BOB, MALLORY, "invite")), Ok(()));
    }

    #[test]
    fn leaving_and_rejecting() {
        let mut state = room_with("invite");
        assert_eq!(check(&state, &member(CAROL, CAROL, "leave")), Ok(()));
        apply(&mut state, member(ALICE, MALLORY, "invite"));
        assert_eq!(check(&state, &member(MALLORY, MALLORY, "leave")), Ok(()));
        assert_eq!(
            check(&state, &member("@dave:x", "@dave:x", "leave")),
            Err(AuthError::NotInRoom)
        );
    }

    #[test]
    fn kick_needs_kick_level_and_higher_level_than_target() {
        let state = room_with("invite");
        // Carol (0) cannot kick anyone.
        assert_eq!(
            check(&state, &member(CAROL, BOB, "leave")),
            Err(AuthError::InsufficientPowerLevel { needed: 50, has: 0 })
        );
        // Bob (50) can kick Carol (0) but not Alice (100).
        assert_eq!(check(&state, &member(BOB, CAROL, "leave")), Ok(()));
        assert_eq!(
            check(&state, &member(BOB, ALICE, "leave")),
            Err(AuthError::TargetPowerTooHigh {
                target: 100,
                sender: 50
            })
        );
        assert_eq!(check(&state, &member(ALICE, BOB, "leave")), Ok(()));
        // A non-member cannot kick.
        assert_eq!(
            check(&state, &member(MALLORY, CAROL, "leave")),
            Err(AuthError::NotInRoom)
        );
    }

    #[test]
    fn ban_and_unban() {
        let mut state = room_with("invite");
        assert_eq!(
            check(&state, &member(CAROL, BOB, "ban")),
            Err(AuthError::InsufficientPowerLevel { needed: 50, has: 0 })
        );
        assert_eq!(
            check(&state, &member(BOB, ALICE, "ban")),
            Err(AuthError::TargetPowerTooHigh {
                target: 100,
                sender: 50
            })
        );
        apply(&mut state, member(BOB, MALLORY, "ban"));
        assert_eq!(state.membership(MALLORY), Some("ban"));
        // Unbanning needs the ban level too.
        apply(
            &mut state,
            ev(
                "m.room.power_levels",
                ALICE,
                Some(""),
                json!({"users": {ALICE: 100, BOB: 50, CAROL: 60}, "ban": 70, "kick": 50, "events": {"m.room.power_levels": 100}}),
            ),
        );
        assert_eq!(
            check(&state, &member(CAROL, MALLORY, "leave")),
            Err(AuthError::InsufficientPowerLevel {
                needed: 70,
                has: 60
            })
        );
        assert_eq!(check(&state, &member(ALICE, MALLORY, "leave")), Ok(()));
    }

    #[test]
    fn knocking() {
        let state = room_with("invite");
        assert_eq!(
            check(&state, &member(MALLORY, MALLORY, "knock")),
            Err(AuthError::KnockNotAllowed("invite".into()))
        );
        let state = room_with("knock");
        assert_eq!(check(&state, &member(MALLORY, MALLORY, "knock")), Ok(()));
        assert!(matches!(
            check(&state, &member(ALICE, MALLORY, "knock")),
            Err(AuthError::InvalidMembership(_))
        ));
        assert!(matches!(
            check(&state, &member(CAROL, CAROL, "knock")),
            Err(AuthError::InvalidMembership(_))
        ));
        let mut state = room_with("knock_restricted");
        apply(&mut state, member(MALLORY, MALLORY, "knock"));
        // Retracting a knock is a leave.
        assert_eq!(check(&state, &member(MALLORY, MALLORY, "leave")), Ok(()));
    }

    #[test]
    fn malformed_member_events() {
        let state = room_with("public");
        assert!(matches!(
            check(
                &state,
                &ev("m.room.member", CAROL, None, json!({"membership": "join"}))
            ),
            Err(AuthError::MalformedEvent(_))
        ));
        assert!(matches!(
            check(&state, &ev("m.room.member", CAROL, Some(CAROL), json!({}))),
            Err(AuthError::MalformedEvent(_))
        ));
        assert!(matches!(
            check(
                &state,
                &ev(
                    "m.room.member",
                    CAROL,
                    Some("carol"),
                    json!({"membership": "join"})
                )
            ),
            Err(AuthError::MalformedEvent(_))
        ));
        assert!(matches!(
            check(&state, &member(CAROL, CAROL, "dance")),
            Err(AuthError::InvalidMembership(_))
        ));
    }

    #[test]
    fn message_from_non_member_denied() {
        let state = room_with("public");
        let message = ev(
            "m.room.message",
            MALLORY,
            None,
            json!({"msgtype": "m.text", "body": "hi"}),
        );
        assert_eq!(check(&state, &message), Err(AuthError::NotInRoom));
        let message = ev(
            "m.room.message",
            CAROL,
            None,
            json!({"msgtype": "m.text", "body": "hi"}),
        );
        assert_eq!(check(&state, &message), Ok(()));
        // An invited user is not joined either.
        let mut state = state;
        apply(&mut state, member(ALICE, MALLORY, "invite"));
        let message = ev("m.room.message", MALLORY, None, json!({"body": "hi"}));
        assert_eq!(check(&state, &message), Err(AuthError::NotInRoom));
    }

    #[test]
    fn state_event_below_state_default_denied() {
        let state = room_with("invite");
        let topic = |sender| ev("m.room.topic", sender, Some(""), json!({"topic": "t"}));
        assert_eq!(
            check(&state, &topic(CAROL)),
            Err(AuthError::InsufficientPowerLevel { needed: 50, has: 0 })
        );
        assert_eq!(check(&state, &topic(BOB)), Ok(()));
        // events_default governs messages; an explicit `events` entry beats both defaults.
        let power = ev(
            "m.room.power_levels",
            ALICE,
            Some(""),
            json!({"users": {ALICE: 100, BOB: 50}, "events_default": 10, "events": {"m.room.topic": 0, "m.room.power_levels": 100}}),
        );
        let mut state = state;
        apply(&mut state, power);
        assert_eq!(check(&state, &topic(CAROL)), Ok(()));
        let message = ev("m.room.message", CAROL, None, json!({"body": "hi"}));
        assert_eq!(
            check(&state, &message),
            Err(AuthError::InsufficientPowerLevel { needed: 10, has: 0 })
        );
    }

    #[test]
    fn user_state_keys_belong_to_their_user() {
        let state = room_with("invite");
        let custom = |sender, key| ev("org.example.profile", sender, Some(key), json!({}));
        assert_eq!(check(&state, &custom(ALICE, ALICE)), Ok(()));
        assert_eq!(
            check(&state, &custom(ALICE, BOB)),
            Err(AuthError::StateKeyNotSender(BOB.into()))
        );
        assert_eq!(check(&state, &custom(ALICE, "plain")), Ok(()));
    }

    #[test]
    fn power_level_escalation_denied() {
        let state = room_with("invite");
        let power = |sender, content: Value| ev("m.room.power_levels", sender, Some(""), content);
        let base = json!({"users": {ALICE: 100, BOB: 50}, "events": {"m.room.power_levels": 100}});

        // Bob (50) cannot send power levels at all: the event needs 100.
        assert_eq!(
            check(&state, &power(BOB, base.clone())),
            Err(AuthError::InsufficientPowerLevel {
                needed: 100,
                has: 50
            })
        );

        // Let Bob send them (level 50) and see what he may change.
        let mut state = state;
        apply(
            &mut state,
            power(
                ALICE,
                json!({"users": {ALICE: 100, BOB: 50}, "events": {"m.room.power_levels": 50}}),
            ),
        );
        let bob_base =
            json!({"users": {ALICE: 100, BOB: 50}, "events": {"m.room.power_levels": 50}});

        // Granting himself more than he has.
        let mut content = bob_base.clone();
        content["users"][BOB] = json!(100);
        assert!(matches!(
            check(&state, &power(BOB, content)),
            Err(AuthError::PowerLevelChangeForbidden(_))
        ));
        // Granting Carol more than he has.
        let mut content = bob_base.clone();
        content["users"][CAROL] = json!(51);
        assert!(matches!(
            check(&state, &power(BOB, content)),
            Err(AuthError::PowerLevelChangeForbidden(_))
        ));
        // Granting Carol up to his own level is fine.
        let mut content = bob_base.clone();
        content["users"][CAROL] = json!(50);
        assert_eq!(check(&state, &power(BOB, content)), Ok(()));
        // Demoting Alice, who is above him.
        let mut content = bob_base.clone();
        content["users"][ALICE] = json!(0);
        assert!(matches!(
            check(&state, &power(BOB, content)),
            Err(AuthError::PowerLevelChangeForbidden(_))
        ));
        // Removing Alice's entry is a change too.
        let content = json!({"users": {BOB: 50}, "events": {"m.room.power_levels": 50}});
        assert!(matches!(
            check(&state, &power(BOB, content)),
            Err(AuthError::PowerLevelChangeForbidden(_))
        ));
        // Demoting himself is allowed.
        let mut content = bob_base.clone();
        content["users"][BOB] = json!(10);
        assert_eq!(check(&state, &power(BOB, content)), Ok(()));
        // Raising a threshold above his level.
        let mut content = bob_base.clone();
        content["ban"] = json!(60);
        assert!(matches!(
            check(&state, &power(BOB, content)),
            Err(AuthError::PowerLevelChangeForbidden(_))
        ));
        // Lowering a threshold that is at or below his level is fine.
        let mut content = bob_base.clone();
        content["kick"] = json!(20);
        assert_eq!(check(&state, &power(BOB, content)), Ok(()));
        // Setting an event level above his own.
        let mut content = bob_base.clone();
        content["events"]["m.room.name"] = json!(75);
        assert!(matches!(
            check(&state, &power(BOB, content)),
            Err(AuthError::PowerLevelChangeForbidden(_))
        ));
        // Changing a notification level above his own.
        let mut content = bob_base;
        content["notifications"] = json!({"room": 60});
        assert!(matches!(
            check(&state, &power(BOB, content)),
            Err(AuthError::PowerLevelChangeForbidden(_))
        ));
    }

    #[test]
    fn power_levels_must_be_well_formed() {
        let state = room_with("invite");
        for content in [
            json!({"users": {ALICE: "100"}}),
            json!({"ban": "50", "users": {ALICE: 100}}),
            json!({"events": {"m.room.name": 1.5}, "users": {ALICE: 100}}),
            json!({"users": {"alice": 100}}),
        ] {
            let event = ev("m.room.power_levels", ALICE, Some(""), content);
            assert!(
                matches!(check(&state, &event), Err(AuthError::InvalidPowerLevels(_))),
                "{event}"
            );
        }
    }

    #[test]
    fn first_power_levels_event_is_only_validated() {
        let mut state = RoomState::new();
        apply(&mut state, create("11"));
        apply(&mut state, member(ALICE, ALICE, "join"));
        // No previous power levels: anything well formed goes, even levels above 100.
        let event = ev(
            "m.room.power_levels",
            ALICE,
            Some(""),
            json!({"users": {ALICE: 100, BOB: 200}}),
        );
        assert_eq!(check(&state, &event), Ok(()));
    }

    #[test]
    fn third_party_invite_events_refused() {
        let state = room_with("invite");
        let event = ev("m.room.third_party_invite", ALICE, Some("token"), json!({}));
        assert_eq!(
            check(&state, &event),
            Err(AuthError::ThirdPartyInviteUnsupported)
        );
    }

    #[test]
    fn wrong_room_and_non_federating() {
        let state = room_with("public");
        let mut message = ev("m.room.message", CAROL, None, json!({}));
        message["room_id"] = json!("!other:x");
        assert_eq!(check(&state, &message), Err(AuthError::WrongRoom));

        let mut state = RoomState::new();
        apply(
            &mut state,
            ev(
                "m.room.create",
                ALICE,
                Some(""),
                json!({"room_version": "11", "m.federate": false}),
            ),
        );
        apply(&mut state, member(ALICE, ALICE, "join"));
        apply(
            &mut state,
            ev(
                "m.room.join_rules",
                ALICE,
                Some(""),
                json!({"join_rule": "public"}),
            ),
        );
        assert_eq!(
            check(&state, &member("@eve:y", "@eve:y", "join")),
            Err(AuthError::NotFederated)
        );
        assert_eq!(check(&state, &member(BOB, BOB, "join")), Ok(()));
    }

    #[test]
    fn unsupported_room_version_in_state() {
        let mut state = RoomState::new();
        state.insert(ev(
            "m.room.create",
            ALICE,
            Some(""),
            json!({"room_version": "9"}),
        ));
        assert_eq!(
            check(&state, &member(ALICE, ALICE, "join")),
            Err(AuthError::UnsupportedRoomVersion("9".into()))
        );
    }

    #[test]
    fn garbage_never_panics() {
        let state = room_with("public");
        for event in [
            json!(null),
            json!([]),
            json!("m.room.message"),
            json!({}),
            json!({"type": 1, "sender": ALICE, "content": {}}),
            json!({"type": "m.room.message", "sender": "alice", "content": {}}),
            json!({"type": "m.room.message", "sender": ALICE, "content": "text"}),
            json!({"type": "m.room.message", "sender": ALICE}),
            json!({"type": "m.room.topic", "sender": ALICE, "state_key": 0, "content": {}}),
        ] {
            assert!(
                matches!(check(&state, &event), Err(AuthError::MalformedEvent(_))),
                "{event}"
            );
        }
    }

    #[test]
    fn redactions() {
        let state = room_with("invite");
        let target = json!({"event_id": "$t", "type": "m.room.message", "sender": CAROL, "room_id": ROOM, "content": {}});
        let redaction = |sender| ev("m.room.redaction", sender, None, json!({"redacts": "$t"}));
        // Sending the redaction event itself only needs the event level.
        assert_eq!(check(&state, &redaction(CAROL)), Ok(()));
        // Own events: yes. Others' events: only with the redact level.
        assert_eq!(
            check_redaction(&state, &redaction(CAROL), Some(&target)),
            Ok(())
        );
        assert_eq!(
            check_redaction(&state, &redaction(BOB), Some(&target)),
            Ok(())
        );
        let bob_target = json!({"event_id": "$t", "sender": BOB, "room_id": ROOM});
        assert_eq!(
            check_redaction(&state, &redaction(CAROL), Some(&bob_target)),
            Err(AuthError::InsufficientPowerLevel { needed: 50, has: 0 })
        );
        assert_eq!(
            check_redaction(&state, &redaction(CAROL), None),
            Err(AuthError::RedactionTargetNotFound)
        );
        // Pre-v11 top-level `redacts` is understood too.
        let mut old_style = ev("m.room.redaction", CAROL, None, json!({}));
        old_style["redacts"] = json!("$t");
        assert_eq!(redaction_target_id(&old_style), Some("$t"));
        assert_eq!(check_redaction(&state, &old_style, Some(&target)), Ok(()));
        // Mismatches.
        let other = json!({"event_id": "$other", "sender": CAROL, "room_id": ROOM});
        assert!(matches!(
            check_redaction(&state, &redaction(CAROL), Some(&other)),
            Err(AuthError::MalformedEvent(_))
        ));
        let elsewhere = json!({"event_id": "$t", "sender": CAROL, "room_id": "!else:x"});
        assert_eq!(
            check_redaction(&state, &redaction(CAROL), Some(&elsewhere)),
            Err(AuthError::WrongRoom)
        );
        let no_target = ev("m.room.redaction", CAROL, None, json!({}));
        assert!(matches!(
            check_redaction(&state, &no_target, Some(&target)),
            Err(AuthError::MalformedEvent(_))
        ));
        let not_redaction = ev("m.room.message", CAROL, None, json!({"redacts": "$t"}));
        assert!(matches!(
            check_redaction(&state, &not_redaction, Some(&target)),
            Err(AuthError::MalformedEvent(_))
        ));
    }
}
