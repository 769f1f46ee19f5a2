//! Push rules (spec "Push Notifications" module): the server-default
//! ruleset, evaluating a ruleset against an event, validating rules that
//! clients PUT, and editing a stored ruleset.
//!
//! Owns: which rule an event matches and what its actions mean. Never:
//! stores rulesets, counts unread notifications, or talks to push gateways;
//! the server does those with what [`evaluate`] and [`first_match`] return.
//!
//! Rulesets are handled as the JSON clients see (`{"global": {"override":
//! [...], "content": [...], "room": [...], "sender": [...], "underride":
//! [...]}}`), so what is stored is exactly what `GET /pushrules/` returns.

use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::ids;
use crate::json_path;
use crate::power_levels::PowerLevels;

/// The rule kinds, in the order they are evaluated.
pub const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

/// Rule IDs of the mention rules the spec removed in v1.17. When they are
/// present (see [`default_ruleset_with_legacy_mentions`]) they keep the
/// behaviour they had when `m.mentions` was introduced: they do not match
/// events that carry `m.mentions`, so that a client using intentional
/// mentions is not second-guessed by body text.
const LEGACY_MENTION_RULES: [&str; 3] = [
    ".m.rule.contains_display_name",
    ".m.rule.contains_user_name",
    ".m.rule.roomnotif",
];

/// Why a push rule request was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PushRuleError {
    #[error("unknown push rule kind {0:?}")]
    UnknownKind(String),
    #[error("rule IDs starting with '.' are reserved for server-default rules: {0:?}")]
    ReservedRuleId(String),
    #[error("invalid rule ID {0:?}")]
    InvalidRuleId(String),
    #[error("invalid push rule: {0}")]
    BadJson(String),
    #[error("the rule has no `actions` array")]
    MissingActions,
    #[error("invalid action: {0}")]
    InvalidAction(String),
    #[error("content rules need a string `pattern`")]
    MissingPattern,
    #[error("invalid condition: {0}")]
    InvalidCondition(String),
    #[error("before/after rule not found: {0}")]
    UnknownRelativeRule(String),
    #[error("push rule not found: {0}")]
    NotFound(String),
}

/// What the caller knows about the user and the room that evaluation needs.
#[derive(Clone, Copy, Debug)]
pub struct PushContext<'a> {
    /// The user whose rules are evaluated.
    pub user_id: &'a str,
    /// The user's display name in the room, for `contains_display_name`.
    pub display_name: Option<&'a str>,
    /// Joined members of the room, for `room_member_count`.
    pub member_count: u64,
    /// The room's power levels, for `sender_notification_permission`.
    pub power_levels: &'a PowerLevels,
}

/// What the matched rule's actions say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    pub notify: bool,
    pub highlight: bool,
    pub sound: Option<String>,
}

fn rule(rule_id: &str, enabled: bool, conditions: Value, actions: Value) -> Value {
    json!({"rule_id": rule_id, "default": true, "enabled": enabled, "conditions": conditions, "actions": actions})
}

fn event_match(key: &str, pattern: &str) -> Value {
    json!({"kind": "event_match", "key": key, "pattern": pattern})
}

fn sound(name: &str) -> Value {
    json!({"set_tweak": "sound", "value": name})
}

fn highlight() -> Value {
    json!({"set_tweak": "highlight"})
}

fn default_override_rules(user_id: &str) -> Vec<Value> {
    vec![
        rule(".m.rule.master", false, json!([]), json!([])),
        rule(
            ".m.rule.suppress_notices",
            true,
            json!([event_match("content.msgtype", "m.notice")]),
            json!([]),
        ),
        rule(
            ".m.rule.invite_for_me",
            true,
            json!([
                event_match("type", "m.room.member"),
                event_match("content.membership", "invite"),
                event_match("state_key", user_id),
            ]),
            json!(["notify", sound("default")]),
        ),
        rule(
            ".m.rule.member_event",
            true,
            json!([event_match("type", "m.room.member")]),
            json!([]),
        ),
        rule(
            ".m.rule.is_user_mention",
            true,
            json!([{"kind": "event_property_contains", "key": r"content.m\.mentions.user_ids", "value": user_id}]),
            json!(["notify", sound("default"), highlight()]),
        ),
        rule(
            ".m.rule.is_room_mention",
            true,
            json!([
                {"kind": "event_property_is", "key": r"content.m\.mentions.room", "value": true},
                {"kind": "sender_notification_permission", "key": "room"},
            ]),
            json!(["notify", highlight()]),
        ),
        rule(
            ".m.rule.tombstone",
            true,
            json!([
                event_match("type", "m.room.tombstone"),
                event_match("state_key", "")
            ]),
            json!(["notify", highlight()]),
        ),
        rule(
            ".m.rule.reaction",
            true,
            json!([event_match("type", "m.reaction")]),
            json!([]),
        ),
        rule(
            ".m.rule.room.server_acl",
            true,
            json!([
                event_match("type", "m.room.server_acl"),
                event_match("state_key", "")
            ]),
            json!([]),
        ),
        rule(
            ".m.rule.suppress_edits",
            true,
            json!([{"kind": "event_property_is", "key": r"content.m\.relates_to.rel_type", "value": "m.replace"}]),
            json!([]),
        ),
    ]
}

fn default_underride_rules() -> Vec<Value> {
    vec![
        rule(
            ".m.rule.call",
            true,
            json!([event_match("type", "m.call.invite")]),
            json!(["notify", sound("ring")]),
        ),
        rule(
            ".m.rule.encrypted_room_one_to_one",
            true,
            json!([{"kind": "room_member_count", "is": "2"}, event_match("type", "m.room.encrypted")]),
            json!(["notify", sound("default")]),
        ),
        rule(
            ".m.rule.room_one_to_one",
            true,
            json!([{"kind": "room_member_count", "is": "2"}, event_match("type", "m.room.message")]),
            json!(["notify", sound("default")]),
        ),
        rule(
            ".m.rule.message",
            true,
            json!([event_match("type", "m.room.message")]),
            json!(["notify"]),
        ),
        rule(
            ".m.rule.encrypted",
            true,
            json!([event_match("type", "m.room.encrypted")]),
            json!(["notify"]),
        ),
    ]
}

/// The server-default ruleset of the current spec (v1.17 and later, which
/// dropped the body-text mention rules), for `user_id`.
pub fn default_ruleset(user_id: &str) -> Value {
    json!({
        "global": {
            "override": default_override_rules(user_id),
            "content": [],
            "room": [],
            "sender": [],
            "underride": default_underride_rules(),
        }
    })
}

/// The default ruleset plus the legacy body-text mention rules of spec
/// v1.16 and earlier (`.m.rule.contains_display_name`, `.m.rule.roomnotif`,
/// `.m.rule.contains_user_name` with the user's localpart), at their old
/// positions. For clients that do not send `m.mentions`, which would
/// otherwise never see a display-name mention highlighted.
pub fn default_ruleset_with_legacy_mentions(user_id: &str) -> Value {
    let mut overrides = default_override_rules(user_id);
    let position = |rules: &[Value], after: &str| {
        rules
            .iter()
            .position(|r| r["rule_id"] == after)
            .map_or(rules.len(), |i| i + 1)
    };
    let at = position(&overrides, ".m.rule.is_user_mention");
    overrides.insert(
        at,
        rule(
            ".m.rule.contains_display_name",
            true,
            json!([{"kind": "contains_display_name"}]),
            json!(["notify", sound("default"), highlight()]),
        ),
    );
    let at = position(&overrides, ".m.rule.is_room_mention");
    overrides.insert(
        at,
        rule(
            ".m.rule.roomnotif",
            true,
            json!([event_match("content.body", "@room"), {"kind": "sender_notification_permission", "key": "room"}]),
            json!(["notify", highlight()]),
        ),
    );
    let localpart = ids::localpart(user_id).unwrap_or(user_id);
    json!({
        "global": {
            "override": overrides,
            "content": [{
                "rule_id": ".m.rule.contains_user_name",
                "default": true,
                "enabled": true,
                "pattern": localpart,
                "actions": ["notify", sound("default"), highlight()],
            }],
            "room": [],
            "sender": [],
            "underride": default_underride_rules(),
        }
    })
}

/// One element of a glob pattern.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyOne,
    AnyMany,
}

fn glob_tokens(pattern: &str) -> Vec<Token> {
    pattern
        .chars()
        .map(|c| match c {
            '*' => Token::AnyMany,
            '?' => Token::AnyOne,
            other => Token::Literal(other),
        })
        .collect()
}

/// The word characters of the spec's word boundary definition.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Follows `*` tokens without consuming text.
fn close_over_stars(tokens: &[Token], states: &mut [bool]) {
    for k in 0..tokens.len() {
        if states[k] && tokens[k] == Token::AnyMany {
            states[k + 1] = true;
        }
    }
}

/// Simulates the glob as an automaton over `text`, in O(text × pattern)
/// whatever the pattern, so hostile patterns cannot blow up. With
/// `within_words`, the match may be any substring that starts and ends at a
/// word boundary; otherwise it must be the whole text.
fn tokens_match(tokens: &[Token], text: &[char], within_words: bool) -> bool {
    let m = tokens.len();
    let n = text.len();
    let can_start = |i: usize| i == 0 || (within_words && !is_word_char(text[i - 1]));
    let can_end = |j: usize| j == n || (within_words && !is_word_char(text[j]));
    let mut states = vec![false; m + 1];
    let mut next = vec![false; m + 1];
    for i in 0..=n {
        if can_start(i) {
            states[0] = true;
            close_over_stars(tokens, &mut states);
        }
        if states[m] && can_end(i) {
            return true;
        }
        let Some(&c) = text.get(i) else { break };
        next.iter_mut().for_each(|s| *s = false);
        let mut any = false;
        for k in 0..m {
            if !states[k] {
                continue;
            }
            match tokens[k] {
                Token::AnyMany => next[k] = true,
                Token::AnyOne => next[k + 1] = true,
                Token::Literal(literal) if literal == c => next[k + 1] = true,
                Token::Literal(_) => continue,
            }
            any = true;
        }
        close_over_stars(tokens, &mut next);
        std::mem::swap(&mut states, &mut next);
        if !any && !within_words {
            return false;
        }
    }
    false
}

/// Case-insensitive glob match of the whole value, or of a word-bounded
/// substring when `within_words` (the `content.body` rule).
fn glob_match(pattern: &str, value: &str, within_words: bool) -> bool {
    let tokens = glob_tokens(&pattern.to_lowercase());
    let text: Vec<char> = value.to_lowercase().chars().collect();
    tokens_match(&tokens, &text, within_words)
}

/// Whether `needle` appears in `haystack` as a whole-word, case-insensitive
/// literal (glob characters in display names mean nothing).
fn contains_words(haystack: &str, needle: &str) -> bool {
    let tokens: Vec<Token> = needle.to_lowercase().chars().map(Token::Literal).collect();
    let text: Vec<char> = haystack.to_lowercase().chars().collect();
    tokens_match(&tokens, &text, true)
}

/// Values `event_property_is` and `event_property_contains` compare: the
/// non-compound canonical JSON ones.
fn is_plain_value(value: &Value) -> bool {
    match value {
        Value::String(_) | Value::Bool(_) | Value::Null => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// Parses `room_member_count`'s `is` and tests `count` against it.
fn member_count_matches(is: &str, count: u64) -> bool {
    let (op, number) = ["==", "<=", ">=", "<", ">"]
        .iter()
        .find_map(|op| is.strip_prefix(op).map(|rest| (*op, rest)))
        .unwrap_or(("==", is));
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let Ok(number) = number.parse::<u64>() else {
        return false;
    };
    match op {
        "==" => count == number,
        "<=" => count <= number,
        ">=" => count >= number,
        "<" => count < number,
        _ => count > number,
    }
}

fn condition_matches(condition: &Value, event: &Value, ctx: &PushContext<'_>) -> bool {
    let param = |name: &str| condition.get(name).and_then(Value::as_str);
    match param("kind") {
        Some("event_match") => {
            let (Some(key), Some(pattern)) = (param("key"), param("pattern")) else {
                return false;
            };
            let Some(value) = json_path::lookup(event, key).and_then(Value::as_str) else {
                return false;
            };
            glob_match(pattern, value, key == "content.body")
        }
        Some("event_property_is") => {
            let (Some(key), Some(wanted)) = (param("key"), condition.get("value")) else {
                return false;
            };
            is_plain_value(wanted)
                && json_path::lookup(event, key).is_some_and(|v| is_plain_value(v) && v == wanted)
        }
        Some("event_property_contains") => {
            let (Some(key), Some(wanted)) = (param("key"), condition.get("value")) else {
                return false;
            };
            is_plain_value(wanted)
                && json_path::lookup(event, key)
                    .and_then(Value::as_array)
                    .is_some_and(|items| items.iter().any(|v| is_plain_value(v) && v == wanted))
        }
        Some("contains_display_name") => {
            let Some(name) = ctx.display_name.filter(|n| !n.is_empty()) else {
                return false;
            };
            let Some(body) = json_path::lookup(event, "content.body").and_then(Value::as_str)
            else {
                return false;
            };
            contains_words(body, name)
        }
        Some("room_member_count") => {
            param("is").is_some_and(|is| member_count_matches(is, ctx.member_count))
        }
        Some("sender_notification_permission") => {
            let (Some(key), Some(sender)) =
                (param("key"), event.get("sender").and_then(Value::as_str))
            else {
                return false;
            };
            ctx.power_levels.user_level(sender) >= ctx.power_levels.notification_level(key)
        }
        // Unrecognised conditions never match, which disables their rule.
        _ => false,
    }
}

fn rule_matches(kind: &str, rule: &Value, event: &Value, ctx: &PushContext<'_>) -> bool {
    // A non-object has no conditions to fail, but it is no rule either.
    if !rule.is_object() || rule.get("enabled").and_then(Value::as_bool) == Some(false) {
        return false;
    }
    let rule_id = rule
        .get("rule_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if LEGACY_MENTION_RULES.contains(&rule_id)
        && event
            .get("content")
            .and_then(|c| c.get("m.mentions"))
            .is_some()
    {
        return false;
    }
    let event_str = |key: &str| event.get(key).and_then(Value::as_str);
    match kind {
        "override" | "underride" => match rule.get("conditions") {
            None | Some(Value::Null) => true,
            Some(Value::Array(conditions)) => {
                conditions.iter().all(|c| condition_matches(c, event, ctx))
            }
            Some(_) => false,
        },
        "content" => {
            let Some(pattern) = rule.get("pattern").and_then(Value::as_str) else {
                return false;
            };
            let Some(body) = json_path::lookup(event, "content.body").and_then(Value::as_str)
            else {
                return false;
            };
            glob_match(pattern, body, true)
        }
        "room" => !rule_id.is_empty() && event_str("room_id") == Some(rule_id),
        "sender" => !rule_id.is_empty() && event_str("sender") == Some(rule_id),
        _ => false,
    }
}

/// The ruleset's `global` scope; a bare scope (without `global`) works too.
fn scope(ruleset: &Value) -> &Value {
    ruleset.get("global").unwrap_or(ruleset)
}

/// The first enabled rule that matches, with its kind. Events the user sent
/// themselves match nothing: homeservers must never notify for those.
pub fn first_match<'a>(
    ruleset: &'a Value,
    event: &Value,
    ctx: &PushContext<'_>,
) -> Option<(&'static str, &'a Value)> {
    if event.get("sender").and_then(Value::as_str) == Some(ctx.user_id) {
        return None;
    }
    let scope = scope(ruleset);
    KINDS.iter().find_map(|kind| {
        let rules = scope.get(*kind)?.as_array()?;
        rules
            .iter()
            .find(|rule| rule_matches(kind, rule, event, ctx))
            .map(|rule| (*kind, rule))
    })
}

/// What a list of actions amounts to. Tweaks only matter for notifications,
/// so without `notify` the outcome is all-false: a rule like
/// `.m.rule.suppress_notices` must not count as a highlight.
pub fn outcome(actions: &Value) -> PushOutcome {
    let mut result = PushOutcome::default();
    for action in actions.as_array().map(Vec::as_slice).unwrap_or_default() {
        if action.as_str() == Some("notify") {
            result.notify = true;
            continue;
        }
        match action.get("set_tweak").and_then(Value::as_str) {
            Some("highlight") => {
                result.highlight = match action.get("value") {
                    None => true,
                    Some(value) => value.as_bool() == Some(true),
                };
            }
            Some("sound") => {
                result.sound = action
                    .get("value")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }
            _ => {}
        }
    }
    if !result.notify {
        return PushOutcome::default();
    }
    result
}

/// Evaluates the ruleset: the actions of the first matching enabled rule in
/// kind order override, content, room, sender, underride; nothing if none
/// matches.
pub fn evaluate(ruleset: &Value, event: &Value, ctx: &PushContext<'_>) -> PushOutcome {
    match first_match(ruleset, event, ctx) {
        Some((_, rule)) => outcome(rule.get("actions").unwrap_or(&Value::Null)),
        None => PushOutcome::default(),
    }
}

fn check_kind(kind: &str) -> Result<(), PushRuleError> {
    if KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(PushRuleError::UnknownKind(kind.to_owned()))
    }
}

/// Validates an actions array, dropping the historical `dont_notify` and
/// `coalesce` actions as the spec tells servers to.
pub fn validate_actions(actions: &Value) -> Result<Value, PushRuleError> {
    let Some(actions) = actions.as_array() else {
        return Err(PushRuleError::MissingActions);
    };
    let mut kept = Vec::with_capacity(actions.len());
    for action in actions {
        match action {
            Value::String(name) if name == "notify" => kept.push(action.clone()),
            Value::String(name) if name == "dont_notify" || name == "coalesce" => {}
            Value::Object(object) if object.get("set_tweak").is_some_and(Value::is_string) => {
                kept.push(action.clone())
            }
            other => return Err(PushRuleError::InvalidAction(other.to_string())),
        }
    }
    Ok(Value::Array(kept))
}

fn validate_condition(condition: &Value) -> Result<(), PushRuleError> {
    let invalid = |message: &str| Err(PushRuleError::InvalidCondition(message.to_owned()));
    let Some(object) = condition.as_object() else {
        return invalid("a condition must be an object");
    };
    let string_param = |name: &str| object.get(name).is_some_and(Value::is_string);
    match object.get("kind").and_then(Value::as_str) {
        None => invalid("a condition needs a string `kind`"),
        Some("event_match") if !(string_param("key") && string_param("pattern")) => {
            invalid("event_match needs string `key` and `pattern`")
        }
        Some("event_property_is" | "event_property_contains")
            if !(string_param("key") && object.get("value").is_some_and(is_plain_value)) =>
        {
            invalid("event_property_is/contains need a string `key` and a non-compound `value`")
        }
        Some("room_member_count") if !string_param("is") => {
            invalid("room_member_count needs a string `is`")
        }
        Some("sender_notification_permission") if !string_param("key") => {
            invalid("sender_notification_permission needs a string `key`")
        }
        // Unknown kinds are stored as they are; they just never match.
        Some(_) => Ok(()),
    }
}

fn check_user_rule_id(rule_id: &str) -> Result<(), PushRuleError> {
    if rule_id.starts_with('.') {
        return Err(PushRuleError::ReservedRuleId(rule_id.to_owned()));
    }
    if rule_id.is_empty() || rule_id.contains('/') || rule_id.contains('\\') {
        return Err(PushRuleError::InvalidRuleId(rule_id.to_owned()));
    }
    Ok(())
}

/// Validates the body of `PUT /pushrules/global/{kind}/{ruleId}` and builds
/// the rule to store (`default: false`, `enabled: true`). Override and
/// underride rules always get a `conditions` array (empty if none was
/// given, which the spec defines as matching every event); content rules
/// need a `pattern`; room and sender rule IDs must be the room or user ID
/// they apply to.
pub fn validate_rule(kind: &str, rule_id: &str, body: &Value) -> Result<Value, PushRuleError> {
    check_kind(kind)?;
    check_user_rule_id(rule_id)?;
    let Some(object) = body.as_object() else {
        return Err(PushRuleError::BadJson(
            "the rule must be a JSON object".into(),
        ));
    };
    let actions = validate_actions(object.get("actions").unwrap_or(&Value::Null))?;
    let mut stored = Map::new();
    stored.insert("rule_id".into(), json!(rule_id));
    stored.insert("default".into(), json!(false));
    stored.insert("enabled".into(), json!(true));
    stored.insert("actions".into(), actions);
    match kind {
        "override" | "underride" => {
            let conditions = match object.get("conditions") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(conditions)) => conditions.clone(),
                Some(_) => {
                    return Err(PushRuleError::BadJson(
                        "`conditions` must be an array".into(),
                    ));
                }
            };
            conditions.iter().try_for_each(validate_condition)?;
            stored.insert("conditions".into(), Value::Array(conditions));
        }
        "content" => {
            let pattern = object
                .get("pattern")
                .and_then(Value::as_str)
                .ok_or(PushRuleError::MissingPattern)?;
            stored.insert("pattern".into(), json!(pattern));
        }
        "room" if !ids::is_valid_room_id(rule_id) => {
            return Err(PushRuleError::InvalidRuleId(rule_id.to_owned()));
        }
        "sender" if !ids::is_valid_user_id(rule_id) => {
            return Err(PushRuleError::InvalidRuleId(rule_id.to_owned()));
        }
        _ => {}
    }
    Ok(Value::Object(stored))
}

/// The rule `rule_id` of `kind`, if the ruleset has it.
pub fn find_rule<'a>(ruleset: &'a Value, kind: &str, rule_id: &str) -> Option<&'a Value> {
    scope(ruleset)
        .get(kind)?
        .as_array()?
        .iter()
        .find(|r| r.get("rule_id").and_then(Value::as_str) == Some(rule_id))
}

/// The list of rules of `kind`, made into a well-formed `{"global": {kind:
/// [...]}}` shape first if the stored value is not one.
fn rules_mut<'a>(ruleset: &'a mut Value, kind: &str) -> Result<&'a mut Vec<Value>, PushRuleError> {
    check_kind(kind)?;
    if !ruleset.is_object() {
        *ruleset = json!({"global": {}});
    }
    let root = ruleset
        .as_object_mut()
        .ok_or_else(|| PushRuleError::BadJson("ruleset is not an object".into()))?;
    let global = root.entry("global").or_insert_with(|| json!({}));
    if !global.is_object() {
        *global = json!({});
    }
    let global = global
        .as_object_mut()
        .ok_or_else(|| PushRuleError::BadJson("global is not an object".into()))?;
    let rules = global.entry(kind).or_insert_with(|| json!([]));
    if !rules.is_array() {
        *rules = json!([]);
    }
    rules
        .as_array_mut()
        .ok_or_else(|| PushRuleError::BadJson("rules are not an array".into()))
}

fn index_of(rules: &[Value], rule_id: &str) -> Option<usize> {
    rules
        .iter()
        .position(|r| r.get("rule_id").and_then(Value::as_str) == Some(rule_id))
}

/// Adds or replaces a user-defined rule (as built by [`validate_rule`]).
///
/// Placement follows the PUT endpoint: `before` (which wins if both are
/// given) or `after` another user-defined rule; otherwise a replaced rule
/// keeps its place and a new one becomes the most important user-defined
/// rule of its kind, which is still below `.m.rule.master`. A replaced rule
/// keeps its `enabled` flag, since PUT only changes a rule's parameters.
pub fn put_rule(
    ruleset: &mut Value,
    kind: &str,
    mut rule: Value,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<(), PushRuleError> {
    let rule_id = rule
        .get("rule_id")
        .and_then(Value::as_str)
        .ok_or_else(|| PushRuleError::BadJson("the rule has no rule_id".into()))?
        .to_owned();
    check_user_rule_id(&rule_id)?;
    let rules = rules_mut(ruleset, kind)?;
    let previous = index_of(rules, &rule_id).map(|i| (i, rules.remove(i)));
    if let Some((_, old)) = &previous
        && let (Some(enabled), Some(object)) = (old.get("enabled"), rule.as_object_mut())
    {
        object.insert("enabled".into(), enabled.clone());
    }
    let relative = |anchor: &str, rules: &[Value]| {
        if anchor.starts_with('.') {
            return None;
        }
        index_of(rules, anchor)
    };
    let position = if let Some(anchor) = before {
        relative(anchor, rules).ok_or_else(|| PushRuleError::UnknownRelativeRule(anchor.to_owned()))
    } else if let Some(anchor) = after {
        relative(anchor, rules)
            .map(|i| i + 1)
            .ok_or_else(|| PushRuleError::UnknownRelativeRule(anchor.to_owned()))
    } else if let Some((i, _)) = &previous {
        Ok(*i)
    } else {
        Ok(rules
            .iter()
            .position(|r| r["rule_id"] != ".m.rule.master")
            .unwrap_or(rules.len()))
    };
    match position {
        Ok(at) => {
            rules.insert(at.min(rules.len()), rule);
            Ok(())
        }
        Err(error) => {
            // Leave the ruleset as it was.
            if let Some((i, old)) = previous {
                rules.insert(i.min(rules.len()), old);
            }
            Err(error)
        }
    }
}

/// Deletes a user-defined rule, returning it. Server-default rules cannot be
/// deleted, only disabled.
pub fn remove_rule(ruleset: &mut Value, kind: &str, rule_id: &str) -> Result<Value, PushRuleError> {
    if rule_id.starts_with('.') {
        return Err(PushRuleError::ReservedRuleId(rule_id.to_owned()));
    }
    let rules = rules_mut(ruleset, kind)?;
    let at = index_of(rules, rule_id).ok_or_else(|| PushRuleError::NotFound(rule_id.to_owned()))?;
    Ok(rules.remove(at))
}

/// Enables or disables any rule, server-default ones included.
pub fn set_enabled(
    ruleset: &mut Value,
    kind: &str,
    rule_id: &str,
    enabled: bool,
) -> Result<(), PushRuleError> {
    let rules = rules_mut(ruleset, kind)?;
    let rule = index_of(rules, rule_id)
        .and_then(|i| rules.get_mut(i))
        .and_then(Value::as_object_mut);
    let rule = rule.ok_or_else(|| PushRuleError::NotFound(rule_id.to_owned()))?;
    rule.insert("enabled".into(), json!(enabled));
    Ok(())
}

/// Replaces the actions of any rule, server-default ones included.
pub fn set_actions(
    ruleset: &mut Value,
    kind: &str,
    rule_id: &str,
    actions: &Value,
) -> Result<(), PushRuleError> {
    let actions = validate_actions(actions)?;
    let rules = rules_mut(ruleset, kind)?;
    let rule = index_of(rules, rule_id)
        .and_then(|i| rules.get_mut(i))
        .and_then(Value::as_object_mut);
    let rule = rule.ok_or_else(|| PushRuleError::NotFound(rule_id.to_owned()))?;
    rule.insert("actions".into(), actions);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "@alice:example.org";
    const OTHER: &str = "@bob:example.org";

    fn message(body: &str) -> Value {
        json!({
            "event_id": "$e",
            "type": "m.room.message",
            "sender": OTHER,
            "room_id": "!r:example.org",
            "content": {"msgtype": "m.text", "body": body},
        })
    }

    fn eval(ruleset: &Value, event: &Value, member_count: u64) -> PushOutcome {
        let levels = PowerLevels::creator_default(OTHER);
        let ctx = PushContext {
            user_id: ME,
            display_name: Some("Alice Liddell"),
            member_count,
            power_levels: &levels,
        };
        evaluate(ruleset, event, &ctx)
    }

    fn rule_ids(ruleset: &Value, kind: &str) -> Vec<String> {
        ruleset["global"][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule_id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn default_ruleset_has_the_spec_rules_in_order() {
        let ruleset = default_ruleset(ME);
        assert_eq!(
            rule_ids(&ruleset, "override"),
            vec![
                ".m.rule.master",
                ".m.rule.suppress_notices",
                ".m.rule.invite_for_me",
                ".m.rule.member_event",
                ".m.rule.is_user_mention",
                ".m.rule.is_room_mention",
                ".m.rule.tombstone",
                ".m.rule.reaction",
                ".m.rule.room.server_acl",
                ".m.rule.suppress_edits",
            ]
        );
        assert_eq!(
            rule_ids(&ruleset, "underride"),
            vec![
                ".m.rule.call",
                ".m.rule.encrypted_room_one_to_one",
                ".m.rule.room_one_to_one",
                ".m.rule.message",
                ".m.rule.encrypted"
            ]
        );
        assert!(rule_ids(&ruleset, "content").is_empty());
        assert!(rule_ids(&ruleset, "room").is_empty());
        assert!(rule_ids(&ruleset, "sender").is_empty());
        let master = find_rule(&ruleset, "override", ".m.rule.master").unwrap();
        assert_eq!(master["enabled"], false);
        assert_eq!(master["default"], true);
        let invite = find_rule(&ruleset, "override", ".m.rule.invite_for_me").unwrap();
        assert_eq!(invite["conditions"][2]["pattern"], ME);
        let mention = find_rule(&ruleset, "override", ".m.rule.is_user_mention").unwrap();
        assert_eq!(
            mention["conditions"][0]["key"],
            r"content.m\.mentions.user_ids"
        );
        assert_eq!(mention["conditions"][0]["value"], ME);
    }

    #[test]
    fn legacy_ruleset_adds_body_mention_rules() {
        let ruleset = default_ruleset_with_legacy_mentions(ME);
        let overrides = rule_ids(&ruleset, "override");
        let at = |id: &str| overrides.iter().position(|r| r == id).unwrap();
        assert_eq!(
            at(".m.rule.contains_display_name"),
            at(".m.rule.is_user_mention") + 1
        );
        assert_eq!(at(".m.rule.roomnotif"), at(".m.rule.is_room_mention") + 1);
        assert_eq!(
            rule_ids(&ruleset, "content"),
            vec![".m.rule.contains_user_name"]
        );
        assert_eq!(ruleset["global"]["content"][0]["pattern"], "alice");
    }

    #[test]
    fn plain_message_in_two_person_room_notifies_with_sound() {
        let ruleset = default_ruleset(ME);
        assert_eq!(
            eval(&ruleset, &message("hello"), 2),
            PushOutcome {
                notify: true,
                highlight: false,
                sound: Some("default".into())
            }
        );
        // In a bigger room it is .m.rule.message: notify, no sound.
        assert_eq!(
            eval(&ruleset, &message("hello"), 3),
            PushOutcome {
                notify: true,
                highlight: false,
                sound: None
            }
        );
    }

    #[test]
    fn own_events_never_notify() {
        let ruleset = default_ruleset(ME);
        let mut own = message("hello");
        own["sender"] = json!(ME);
        assert_eq!(eval(&ruleset, &own, 2), PushOutcome::default());
    }

    #[test]
    fn user_mention_highlights() {
        let ruleset = default_ruleset(ME);
        let mut event = message("hey");
        event["content"]["m.mentions"] = json!({"user_ids": [ME]});
        assert_eq!(
            eval(&ruleset, &event, 5),
            PushOutcome {
                notify: true,
                highlight: true,
                sound: Some("default".into())
            }
        );
    }

    #[test]
    fn display_name_mention_highlights_with_legacy_rules() {
        let ruleset = default_ruleset_with_legacy_mentions(ME);
        let highlighted = PushOutcome {
            notify: true,
            highlight: true,
            sound: Some("default".into()),
        };
        assert_eq!(
            eval(&ruleset, &message("hi alice liddell, how are you?"), 5),
            highlighted
        );
        assert_eq!(eval(&ruleset, &message("ALICE LIDDELL!"), 5), highlighted);
        // Localpart mention through .m.rule.contains_user_name.
        assert_eq!(eval(&ruleset, &message("ping alice"), 5), highlighted);
        // Not a whole word.
        assert!(!eval(&ruleset, &message("malice liddells"), 5).highlight);
        // Clients using m.mentions are taken at their word.
        let mut intentional = message("alice liddell");
        intentional["content"]["m.mentions"] = json!({});
        assert_eq!(
            eval(&ruleset, &intentional, 5),
            PushOutcome {
                notify: true,
                highlight: false,
                sound: None
            }
        );
        // Without the legacy rules a body mention is just a message.
        assert!(!eval(&default_ruleset(ME), &message("alice liddell"), 5).highlight);
    }

    #[test]
    fn contains_display_name_condition_in_user_rule() {
        let mut ruleset = default_ruleset(ME);
        let rule = validate_rule(
            "override",
            "name",
            &json!({"conditions": [{"kind": "contains_display_name"}], "actions": ["notify", {"set_tweak": "highlight"}]}),
        )
        .unwrap();
        put_rule(&mut ruleset, "override", rule, None, None).unwrap();
        assert!(eval(&ruleset, &message("Alice Liddell: look"), 5).highlight);
        let levels = PowerLevels::default();
        let nameless = PushContext {
            user_id: ME,
            display_name: None,
            member_count: 5,
            power_levels: &levels,
        };
        assert!(!evaluate(&ruleset, &message("Alice Liddell"), &nameless).highlight);
    }

    #[test]
    fn room_mention_needs_permission() {
        let ruleset = default_ruleset(ME);
        let mut event = message("everyone!");
        event["content"]["m.mentions"] = json!({"room": true});
        // OTHER is the creator (100) under creator_default, above notifications.room (50).
        assert_eq!(
            eval(&ruleset, &event, 5),
            PushOutcome {
                notify: true,
                highlight: true,
                sound: None
            }
        );
        let levels = PowerLevels::default();
        let ctx = PushContext {
            user_id: ME,
            display_name: None,
            member_count: 5,
            power_levels: &levels,
        };
        assert_eq!(
            evaluate(&ruleset, &event, &ctx),
            PushOutcome {
                notify: true,
                highlight: false,
                sound: None
            }
        );
    }

    #[test]
    fn suppressions() {
        let ruleset = default_ruleset(ME);
        let mut notice = message("bot says");
        notice["content"]["msgtype"] = json!("m.notice");
        assert_eq!(eval(&ruleset, &notice, 2), PushOutcome::default());
        let member = json!({"type": "m.room.member", "sender": OTHER, "state_key": OTHER, "content": {"membership": "join"}});
        assert_eq!(eval(&ruleset, &member, 2), PushOutcome::default());
        let reaction = json!({"type": "m.reaction", "sender": OTHER, "content": {}});
        assert_eq!(eval(&ruleset, &reaction, 2), PushOutcome::default());
        let mut edit = message("* fixed");
        edit["content"]["m.relates_to"] = json!({"rel_type": "m.replace", "event_id": "$x"});
        assert_eq!(eval(&ruleset, &edit, 2), PushOutcome::default());
        // Non-message events without a rule do not notify.
        let topic = json!({"type": "m.room.topic", "sender": OTHER, "state_key": "", "content": {"topic": "x"}});
        assert_eq!(eval(&ruleset, &topic, 2), PushOutcome::default());
    }

    #[test]
    fn invites_calls_tombstones_and_encrypted() {
        let ruleset = default_ruleset(ME);
        let invite = json!({"type": "m.room.member", "sender": OTHER, "state_key": ME, "content": {"membership": "invite"}});
        assert_eq!(
            eval(&ruleset, &invite, 2),
            PushOutcome {
                notify: true,
                highlight: false,
                sound: Some("default".into())
            }
        );
        let call = json!({"type": "m.call.invite", "sender": OTHER, "content": {}});
        assert_eq!(
            eval(&ruleset, &call, 5),
            PushOutcome {
                notify: true,
                highlight: false,
                sound: Some("ring".into())
            }
        );
        let tombstone =
            json!({"type": "m.room.tombstone", "sender": OTHER, "state_key": "", "content": {}});
        assert_eq!(
            eval(&ruleset, &tombstone, 5),
            PushOutcome {
                notify: true,
                highlight: true,
                sound: None
            }
        );
        let encrypted = json!({"type": "m.room.encrypted", "sender": OTHER, "content": {}});
        assert_eq!(
            eval(&ruleset, &encrypted, 2),
            PushOutcome {
                notify: true,
                highlight: false,
                sound: Some("default".into())
            }
        );
        assert_eq!(
            eval(&ruleset, &encrypted, 3),
            PushOutcome {
                notify: true,
                highlight: false,
                sound: None
            }
        );
    }

    #[test]
    fn master_rule_silences_everything() {
        let mut ruleset = default_ruleset(ME);
        set_enabled(&mut ruleset, "override", ".m.rule.master", true).unwrap();
        assert_eq!(eval(&ruleset, &message("hello"), 2), PushOutcome::default());
        // Even above user-defined override rules.
        let rule = validate_rule("override", "all", &json!({"actions": ["notify"]})).unwrap();
        put_rule(&mut ruleset, "override", rule, None, None).unwrap();
        assert_eq!(
            rule_ids(&ruleset, "override")[..2],
            [".m.rule.master".to_owned(), "all".to_owned()]
        );
        assert_eq!(eval(&ruleset, &message("hello"), 2), PushOutcome::default());
    }

    #[test]
    fn kind_order_room_and_sender_rules() {
        let mut ruleset = default_ruleset(ME);
        let mute_room = validate_rule("room", "!r:example.org", &json!({"actions": []})).unwrap();
        put_rule(&mut ruleset, "room", mute_room, None, None).unwrap();
        assert_eq!(eval(&ruleset, &message("hello"), 2), PushOutcome::default());
        // Content rules come before room rules.
        let cake = validate_rule("content", "cake", &json!({"pattern": "cake", "actions": ["notify", {"set_tweak": "sound", "value": "cakealarm.wav"}]})).unwrap();
        put_rule(&mut ruleset, "content", cake, None, None).unwrap();
        assert_eq!(
            eval(&ruleset, &message("is there cake?"), 2),
            PushOutcome {
                notify: true,
                highlight: false,
                sound: Some("cakealarm.wav".into())
            }
        );
        // Sender rules apply to that sender.
        let mut ruleset = default_ruleset(ME);
        let loud = validate_rule(
            "sender",
            OTHER,
            &json!({"actions": ["notify", {"set_tweak": "highlight", "value": true}]}),
        )
        .unwrap();
        put_rule(&mut ruleset, "sender", loud, None, None).unwrap();
        assert!(eval(&ruleset, &message("x"), 5).highlight);
        // Disabled rules never match.
        set_enabled(&mut ruleset, "sender", OTHER, false).unwrap();
        assert!(!eval(&ruleset, &message("x"), 5).highlight);
    }

    #[test]
    fn event_match_globs() {
        assert!(glob_match("lunc?*", "Lunch plans", false));
        assert!(glob_match("lunc?*", "LUNCH", false));
        assert!(!glob_match("lunc?*", " lunch", false));
        assert!(!glob_match("lunc?*", "lunc", false));
        assert!(glob_match("ex*ple", "An example event.", true));
        assert!(glob_match("ex*ple", "exple", true));
        assert!(glob_match("ex*ple", "An exciting triple-whammy", true));
        assert!(!glob_match("ex*ple", "An exciting triples", true));
        assert!(!glob_match("cake", "cakes", true));
        assert!(glob_match("cake", "I like cake.", true));
        assert!(glob_match("*", "", false));
        assert!(!glob_match("a", "", false));
        // Hostile patterns stay fast.
        let long = "a".repeat(5000);
        assert!(!glob_match("*a*a*a*a*a*a*a*a*a*a*b", &long, true));
    }

    #[test]
    fn event_match_condition_details() {
        let levels = PowerLevels::default();
        let ctx = PushContext {
            user_id: ME,
            display_name: None,
            member_count: 2,
            power_levels: &levels,
        };
        let event = json!({"type": "m.room.topic", "content": {"topic": "Lunch plans", "n": 5, "m.relates_to": {"rel_type": "m.thread"}}});
        let cond = |c: Value| condition_matches(&c, &event, &ctx);
        assert!(cond(event_match("content.topic", "lunc?*")));
        assert!(!cond(event_match("content.n", "*")));
        assert!(!cond(event_match("content.missing", "*")));
        assert!(cond(event_match(
            r"content.m\.relates_to.rel_type",
            "m.thread"
        )));
        assert!(!cond(json!({"kind": "event_match", "key": "type"})));
        assert!(!cond(json!({"kind": "made_up"})));
        assert!(!cond(json!({"key": "type", "pattern": "*"})));
    }

    #[test]
    fn property_is_and_contains() {
        let levels = PowerLevels::default();
        let ctx = PushContext {
            user_id: ME,
            display_name: None,
            member_count: 2,
            power_levels: &levels,
        };
        let event = json!({"content": {"m.federate": true, "n": 1, "f": 1.0, "s": "true", "nul": null, "obj": {}, "list": ["#a:x", 3, {"x": 1}, null]}});
        let is = |key: &str, value: Value| {
            condition_matches(
                &json!({"kind": "event_property_is", "key": key, "value": value}),
                &event,
                &ctx,
            )
        };
        assert!(is(r"content.m\.federate", json!(true)));
        assert!(!is(r"content.m\.federate", json!("true")));
        assert!(!is(r"content.m\.federate", json!(1)));
        assert!(is("content.n", json!(1)));
        assert!(!is("content.f", json!(1)));
        assert!(!is("content.s", json!(true)));
        assert!(is("content.nul", Value::Null));
        assert!(!is("content.absent", Value::Null));
        assert!(!is("content.obj", json!({})));
        let contains = |value: Value| {
            condition_matches(
                &json!({"kind": "event_property_contains", "key": "content.list", "value": value}),
                &event,
                &ctx,
            )
        };
        assert!(contains(json!("#a:x")));
        assert!(contains(json!(3)));
        assert!(contains(Value::Null));
        assert!(!contains(json!(":x")));
        assert!(!contains(json!({"x": 1})));
        assert!(!condition_matches(
            &json!({"kind": "event_property_contains", "key": "content.s", "value": "true"}),
            &event,
            &ctx
        ));
    }

    #[test]
    fn member_counts() {
        assert!(member_count_matches("2", 2));
        assert!(member_count_matches("==2", 2));
        assert!(!member_count_matches("2", 3));
        assert!(member_count_matches("<10", 9));
        assert!(!member_count_matches("<10", 10));
        assert!(member_count_matches("<=10", 10));
        assert!(member_count_matches(">1", 2));
        assert!(member_count_matches(">=2", 2));
        assert!(!member_count_matches("", 0));
        assert!(!member_count_matches("==", 0));
        assert!(!member_count_matches("-1", 0));
        assert!(!member_count_matches("abc", 0));
        assert!(!member_count_matches("99999999999999999999999", 0));
    }

    #[test]
    fn outcomes_from_actions() {
        assert_eq!(
            outcome(&json!(["notify", {"set_tweak": "highlight", "value": false}])),
            PushOutcome {
                notify: true,
                highlight: false,
                sound: None
            }
        );
        assert_eq!(
            outcome(&json!([{"set_tweak": "highlight"}])),
            PushOutcome::default()
        );
        assert_eq!(outcome(&json!("notify")), PushOutcome::default());
        assert_eq!(
            outcome(&json!(["notify", {"set_tweak": "sound", "value": 5}])),
            PushOutcome {
                notify: true,
                highlight: false,
                sound: None
            }
        );
    }

    #[test]
    fn validates_rules() {
        let stored = validate_rule("override", "beer", &json!({
            "conditions": [{"kind": "event_match", "key": "content.body", "pattern": "beer"}, {"kind": "room_member_count", "is": "<=10"}],
            "actions": ["notify", "dont_notify", {"set_tweak": "sound", "value": "beeroclock.wav"}]
        }))
        .unwrap();
        assert_eq!(stored["rule_id"], "beer");
        assert_eq!(stored["default"], false);
        assert_eq!(stored["enabled"], true);
        assert_eq!(
            stored["actions"],
            json!(["notify", {"set_tweak": "sound", "value": "beeroclock.wav"}])
        );
        assert_eq!(stored["conditions"].as_array().unwrap().len(), 2);

        let no_conditions = validate_rule("underride", "all", &json!({"actions": []})).unwrap();
        assert_eq!(no_conditions["conditions"], json!([]));
        let content = validate_rule(
            "content",
            "cake",
            &json!({"pattern": "cake*lie", "actions": ["notify"]}),
        )
        .unwrap();
        assert_eq!(content["pattern"], "cake*lie");
        assert!(content.get("conditions").is_none());
        let room = validate_rule("room", "!r:example.org", &json!({"actions": []})).unwrap();
        assert_eq!(
            room,
            json!({"rule_id": "!r:example.org", "default": false, "enabled": true, "actions": []})
        );

        use PushRuleError as E;
        assert_eq!(
            validate_rule("global", "x", &json!({"actions": []})),
            Err(E::UnknownKind("global".into()))
        );
        assert_eq!(
            validate_rule("override", ".m.rule.master", &json!({"actions": []})),
            Err(E::ReservedRuleId(".m.rule.master".into()))
        );
        assert_eq!(
            validate_rule("override", "a/b", &json!({"actions": []})),
            Err(E::InvalidRuleId("a/b".into()))
        );
        assert_eq!(
            validate_rule("override", "a\\b", &json!({"actions": []})),
            Err(E::InvalidRuleId("a\\b".into()))
        );
        assert_eq!(
            validate_rule("override", "", &json!({"actions": []})),
            Err(E::InvalidRuleId("".into()))
        );
        assert_eq!(
            validate_rule("override", "x", &json!({})),
            Err(E::MissingActions)
        );
        assert!(matches!(
            validate_rule("override", "x", &json!([])),
            Err(E::BadJson(_))
        ));
        assert!(matches!(
            validate_rule("override", "x", &json!({"actions": ["explode"]})),
            Err(E::InvalidAction(_))
        ));
        assert!(matches!(
            validate_rule("override", "x", &json!({"actions": [{"value": 1}]})),
            Err(E::InvalidAction(_))
        ));
        assert!(matches!(
            validate_rule("override", "x", &json!({"actions": [], "conditions": {}})),
            Err(E::BadJson(_))
        ));
        assert!(matches!(
            validate_rule(
                "override",
                "x",
                &json!({"actions": [], "conditions": [{"kind": "event_match", "key": "type"}]})
            ),
            Err(E::InvalidCondition(_))
        ));
        assert!(matches!(
            validate_rule(
                "override",
                "x",
                &json!({"actions": [], "conditions": [{"kind": "event_property_is", "key": "a", "value": []}]})
            ),
            Err(E::InvalidCondition(_))
        ));
        assert!(matches!(
            validate_rule("override", "x", &json!({"actions": [], "conditions": [{}]})),
            Err(E::InvalidCondition(_))
        ));
        assert!(
            validate_rule(
                "override",
                "x",
                &json!({"actions": [], "conditions": [{"kind": "org.example.future"}]})
            )
            .is_ok()
        );
        assert_eq!(
            validate_rule("content", "x", &json!({"actions": []})),
            Err(E::MissingPattern)
        );
        assert_eq!(
            validate_rule("room", "not-a-room", &json!({"actions": []})),
            Err(E::InvalidRuleId("not-a-room".into()))
        );
        assert_eq!(
            validate_rule("sender", "bob", &json!({"actions": []})),
            Err(E::InvalidRuleId("bob".into()))
        );
    }

    #[test]
    fn editing_rulesets() {
        let mut ruleset = default_ruleset(ME);
        let make =
            |id: &str| validate_rule("underride", id, &json!({"actions": ["notify"]})).unwrap();
        put_rule(&mut ruleset, "underride", make("a"), None, None).unwrap();
        put_rule(&mut ruleset, "underride", make("b"), None, None).unwrap();
        assert_eq!(
            rule_ids(&ruleset, "underride")[..3],
            ["b", "a", ".m.rule.call"]
        );
        put_rule(&mut ruleset, "underride", make("c"), None, Some("a")).unwrap();
        put_rule(&mut ruleset, "underride", make("d"), Some("b"), Some("a")).unwrap();
        assert_eq!(
            rule_ids(&ruleset, "underride")[..5],
            ["d", "b", "a", "c", ".m.rule.call"]
        );
        // Relative to a default or missing rule: refused, nothing changes.
        assert_eq!(
            put_rule(
                &mut ruleset,
                "underride",
                make("e"),
                Some(".m.rule.call"),
                None
            ),
            Err(PushRuleError::UnknownRelativeRule(".m.rule.call".into()))
        );
        assert_eq!(
            put_rule(&mut ruleset, "underride", make("a"), None, Some("zzz")),
            Err(PushRuleError::UnknownRelativeRule("zzz".into()))
        );
        assert_eq!(
            rule_ids(&ruleset, "underride")[..5],
            ["d", "b", "a", "c", ".m.rule.call"]
        );
        // Replacing keeps place and enabled flag.
        set_enabled(&mut ruleset, "underride", "b", false).unwrap();
        let mut replacement = make("b");
        replacement["actions"] = json!([]);
        put_rule(&mut ruleset, "underride", replacement, None, None).unwrap();
        let b = find_rule(&ruleset, "underride", "b").unwrap();
        assert_eq!(
            (b["enabled"].clone(), b["actions"].clone()),
            (json!(false), json!([]))
        );
        assert_eq!(rule_ids(&ruleset, "underride")[..2], ["d", "b"]);
        // Actions of defaults can change; defaults cannot be removed.
        set_actions(&mut ruleset, "underride", ".m.rule.message", &json!([])).unwrap();
        assert_eq!(
            find_rule(&ruleset, "underride", ".m.rule.message").unwrap()["actions"],
            json!([])
        );
        assert!(matches!(
            set_actions(&mut ruleset, "underride", "a", &json!("x")),
            Err(PushRuleError::MissingActions)
        ));
        assert_eq!(
            remove_rule(&mut ruleset, "underride", ".m.rule.message"),
            Err(PushRuleError::ReservedRuleId(".m.rule.message".into()))
        );
        assert_eq!(
            remove_rule(&mut ruleset, "underride", "a").unwrap()["rule_id"],
            "a"
        );
        assert_eq!(
            remove_rule(&mut ruleset, "underride", "a"),
            Err(PushRuleError::NotFound("a".into()))
        );
        assert_eq!(
            set_enabled(&mut ruleset, "underride", "zzz", true),
            Err(PushRuleError::NotFound("zzz".into()))
        );
        assert_eq!(
            set_enabled(&mut ruleset, "nope", "a", true),
            Err(PushRuleError::UnknownKind("nope".into()))
        );
        // A broken stored ruleset is repaired rather than panicked on.
        let mut broken = json!("garbage");
        put_rule(
            &mut broken,
            "room",
            validate_rule("room", "!r:x", &json!({"actions": []})).unwrap(),
            None,
            None,
        )
        .unwrap();
        assert_eq!(rule_ids(&broken, "room"), vec!["!r:x"]);
    }

    #[test]
    fn garbage_rulesets_and_events_do_not_panic() {
        let levels = PowerLevels::default();
        let ctx = PushContext {
            user_id: ME,
            display_name: Some(""),
            member_count: 0,
            power_levels: &levels,
        };
        for ruleset in [
            json!(null),
            json!([]),
            json!({"global": 5}),
            json!({"global": {"override": [null, 5, {"conditions": 5}]}}),
        ] {
            for event in [json!(null), json!([]), message("x")] {
                let _ = evaluate(&ruleset, &event, &ctx);
            }
        }
        // A bare scope works like a ruleset.
        let bare = default_ruleset(ME)["global"].clone();
        assert!(evaluate(&bare, &message("x"), &ctx).notify);
    }
}
