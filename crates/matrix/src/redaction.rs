//! The redaction algorithm: what is left of an event once it is redacted,
//! per room version (v9/v10 rules for versions up to 10, the v11 rules
//! from 11 on).
//!
//! Owns: stripping keys. Never: decides whether a redaction is allowed
//! (that is [`crate::auth::check_redaction`]) and never adds
//! `unsigned.redacted_because`; the server does that when it serves the
//! redacted event, since only it has the redaction event at hand.

use serde_json::{Map, Value};

/// Top-level keys kept by the v11 algorithm. Older versions also keep
/// `origin`, `membership` and `prev_state`.
const KEPT_TOP_LEVEL_KEYS: &[&str] = &[
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
];
const KEPT_TOP_LEVEL_KEYS_BEFORE_V11: &[&str] = &["origin", "membership", "prev_state"];

/// Which generation of the algorithm a room version uses. Versions this
/// crate does not know (including non-numeric ones) get the newest rules,
/// which are the strictest about what to keep at top level.
fn generation(room_version: &str) -> u32 {
    room_version
        .parse::<u32>()
        .ok()
        .filter(|v| *v >= 1)
        .map_or(11, |v| v.min(11))
}

/// The content keys kept for `event_type`, or `None` when all are kept.
fn kept_content_keys(event_type: &str, generation: u32) -> Option<&'static [&'static str]> {
    let keys: &'static [&'static str] = match event_type {
        "m.room.member" if generation >= 9 => &["membership", "join_authorised_via_users_server"],
        "m.room.member" => &["membership"],
        "m.room.create" if generation >= 11 => return None,
        "m.room.create" => &["creator"],
        "m.room.join_rules" if generation >= 8 => &["join_rule", "allow"],
        "m.room.join_rules" => &["join_rule"],
        "m.room.power_levels" if generation >= 11 => &[
            "ban",
            "events",
            "events_default",
            "invite",
            "kick",
            "redact",
            "state_default",
            "users",
            "users_default",
        ],
        "m.room.power_levels" => &[
            "ban",
            "events",
            "events_default",
            "kick",
            "redact",
            "state_default",
            "users",
            "users_default",
        ],
        "m.room.history_visibility" => &["history_visibility"],
        "m.room.aliases" if generation <= 5 => &["aliases"],
        "m.room.redaction" if generation >= 11 => &["redacts"],
        _ => &[],
    };
    Some(keys)
}

/// The content left after redaction.
fn redact_content(event_type: &str, content: &Value, generation: u32) -> Value {
    let Some(object) = content.as_object() else {
        return Value::Object(Map::new());
    };
    let Some(kept) = kept_content_keys(event_type, generation) else {
        return Value::Object(object.clone());
    };
    let mut redacted: Map<String, Value> = object
        .iter()
        .filter(|(key, _)| kept.contains(&key.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // v11 keeps only `signed` of a member event's third-party invite, so the
    // invite can still be verified after redaction.
    if event_type == "m.room.member"
        && generation >= 11
        && let Some(signed) = object
            .get("third_party_invite")
            .and_then(|invite| invite.get("signed"))
    {
        let mut invite = Map::new();
        invite.insert("signed".to_owned(), signed.clone());
        redacted.insert("third_party_invite".to_owned(), Value::Object(invite));
    }
    Value::Object(redacted)
}

/// The event as the redaction algorithm of `room_version` leaves it. A
/// non-object input comes back unchanged since there is nothing to strip.
pub fn redact(event: &Value, room_version: &str) -> Value {
    let Some(object) = event.as_object() else {
        return event.clone();
    };
    let generation = generation(room_version);
    let event_type = object
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let keeps = |key: &str| {
        KEPT_TOP_LEVEL_KEYS.contains(&key)
            || (generation < 11 && KEPT_TOP_LEVEL_KEYS_BEFORE_V11.contains(&key))
    };
    let mut redacted: Map<String, Value> = object
        .iter()
        .filter(|(key, _)| key.as_str() != "content" && keeps(key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let content = object.get("content").unwrap_or(&Value::Null);
    redacted.insert(
        "content".to_owned(),
        redact_content(event_type, content, generation),
    );
    Value::Object(redacted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(event_type: &str, content: Value) -> Value {
        json!({
            "event_id": "$e",
            "type": event_type,
            "room_id": "!r:x",
            "sender": "@a:x",
            "state_key": "",
            "origin_server_ts": 1,
            "origin": "x",
            "membership": "join",
            "prev_state": [],
            "redacts": "$z",
            "unsigned": {"age": 5},
            "extra": true,
            "content": content,
        })
    }

    #[test]
    fn top_level_keys_v11() {
        let redacted = redact(&event("m.room.message", json!({"body": "hi"})), "11");
        let keys: Vec<&str> = redacted
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            vec![
                "content",
                "event_id",
                "origin_server_ts",
                "room_id",
                "sender",
                "state_key",
                "type"
            ]
        );
        assert_eq!(redacted["content"], json!({}));
    }

    #[test]
    fn top_level_keys_v10_keep_origin_membership_prev_state() {
        let redacted = redact(&event("m.room.message", json!({"body": "hi"})), "10");
        for kept in ["origin", "membership", "prev_state", "event_id", "sender"] {
            assert!(redacted.get(kept).is_some(), "{kept}");
        }
        for gone in ["unsigned", "extra", "redacts"] {
            assert!(redacted.get(gone).is_none(), "{gone}");
        }
        assert_eq!(redacted["content"], json!({}));
    }

    #[test]
    fn member_content() {
        let content = json!({
            "membership": "join",
            "displayname": "Alice",
            "avatar_url": "mxc://x/y",
            "join_authorised_via_users_server": "@b:x",
            "third_party_invite": {"display_name": "a", "signed": {"mxid": "@a:x"}},
        });
        let v10 = redact(&event("m.room.member", content.clone()), "10");
        assert_eq!(
            v10["content"],
            json!({"membership": "join", "join_authorised_via_users_server": "@b:x"})
        );
        let v11 = redact(&event("m.room.member", content), "11");
        assert_eq!(
            v11["content"],
            json!({
                "membership": "join",
                "join_authorised_via_users_server": "@b:x",
                "third_party_invite": {"signed": {"mxid": "@a:x"}},
            })
        );
    }

    #[test]
    fn create_content() {
        let content = json!({"creator": "@a:x", "room_version": "10", "m.federate": false});
        assert_eq!(
            redact(&event("m.room.create", content.clone()), "10")["content"],
            json!({"creator": "@a:x"})
        );
        assert_eq!(
            redact(&event("m.room.create", content.clone()), "11")["content"],
            content
        );
    }

    #[test]
    fn power_levels_content() {
        let content = json!({"ban": 50, "invite": 0, "kick": 50, "notifications": {"room": 50}, "users": {"@a:x": 100}});
        assert_eq!(
            redact(&event("m.room.power_levels", content.clone()), "10")["content"],
            json!({"ban": 50, "kick": 50, "users": {"@a:x": 100}})
        );
        assert_eq!(
            redact(&event("m.room.power_levels", content), "11")["content"],
            json!({"ban": 50, "invite": 0, "kick": 50, "users": {"@a:x": 100}})
        );
    }

    #[test]
    fn join_rules_history_visibility_redaction() {
        let join_rules = json!({"join_rule": "restricted", "allow": [], "other": 1});
        assert_eq!(
            redact(&event("m.room.join_rules", join_rules), "10")["content"],
            json!({"join_rule": "restricted", "allow": []})
        );
        let visibility = json!({"history_visibility": "shared", "other": 1});
        assert_eq!(
            redact(&event("m.room.history_visibility", visibility), "11")["content"],
            json!({"history_visibility": "shared"})
        );
        let redaction = json!({"redacts": "$t", "reason": "spam"});
        assert_eq!(
            redact(&event("m.room.redaction", redaction.clone()), "10")["content"],
            json!({})
        );
        assert_eq!(
            redact(&event("m.room.redaction", redaction), "11")["content"],
            json!({"redacts": "$t"})
        );
    }

    #[test]
    fn odd_inputs() {
        assert_eq!(redact(&json!("x"), "11"), json!("x"));
        assert_eq!(
            redact(&json!({"type": "m.room.message", "content": "text"}), "11"),
            json!({"type": "m.room.message", "content": {}})
        );
        assert_eq!(
            redact(&json!({"type": 5}), "11"),
            json!({"type": 5, "content": {}})
        );
        // Unknown versions get the newest rules.
        let content = json!({"creator": "@a:x", "room_version": "x"});
        assert_eq!(
            redact(&event("m.room.create", content.clone()), "org.example.v")["content"],
            content
        );
        assert_eq!(generation("1"), 1);
        assert_eq!(generation("12"), 11);
        assert_eq!(generation("0"), 11);
    }

    #[test]
    fn old_versions_keep_less() {
        let member = json!({"membership": "join", "join_authorised_via_users_server": "@b:x"});
        assert_eq!(
            redact(&event("m.room.member", member), "8")["content"],
            json!({"membership": "join"})
        );
        let join_rules = json!({"join_rule": "public", "allow": []});
        assert_eq!(
            redact(&event("m.room.join_rules", join_rules), "7")["content"],
            json!({"join_rule": "public"})
        );
        let aliases = json!({"aliases": ["#a:x"]});
        assert_eq!(
            redact(&event("m.room.aliases", aliases.clone()), "5")["content"],
            aliases
        );
        assert_eq!(
            redact(&event("m.room.aliases", aliases), "6")["content"],
            json!({})
        );
    }
}
