//! Dot-separated property paths (spec appendix "Dot-separated property
//! paths"), shared by push rule conditions and filter `event_fields`.
//!
//! Owns: splitting `content.m\.relates_to` into `["content", "m.relates_to"]`
//! and walking a JSON value along such a path. Never: interprets what it
//! finds there.

use serde_json::Value;

/// Splits a dotted path into property names. `\.` is a literal dot and `\\`
/// a literal backslash; any other backslash sequence is kept verbatim because
/// the spec reserves those for future use rather than forbidding them.
pub(crate) fn split(path: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some('.') | Some('\\') => {
                    current.push(chars.next().unwrap_or('\\'));
                }
                _ => current.push('\\'),
            },
            '.' => parts.push(std::mem::take(&mut current)),
            other => current.push(other),
        }
    }
    parts.push(current);
    parts
}

/// The value at `path` inside `value`, walking objects only.
pub(crate) fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    split(path)
        .iter()
        .try_fold(value, |node, key| node.as_object()?.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splits_with_escapes() {
        assert_eq!(split("content.body"), vec!["content", "body"]);
        assert_eq!(
            split(r"content.m\.relates_to"),
            vec!["content", "m.relates_to"]
        );
        assert_eq!(split(r"content.m\\foo"), vec!["content", r"m\foo"]);
        assert_eq!(split(r"content.m\xfoo"), vec!["content", r"m\xfoo"]);
        assert_eq!(split("type"), vec!["type"]);
        assert_eq!(split(r"trailing\"), vec![r"trailing\"]);
        assert_eq!(split(""), vec![""]);
    }

    #[test]
    fn looks_up_nested_values() {
        let event = json!({"content": {"m.mentions": {"room": true}, "body": "hi"}, "list": [1]});
        assert_eq!(
            lookup(&event, r"content.m\.mentions.room"),
            Some(&json!(true))
        );
        assert_eq!(lookup(&event, "content.body"), Some(&json!("hi")));
        assert_eq!(lookup(&event, "content.missing"), None);
        assert_eq!(lookup(&event, "list.0"), None);
        assert_eq!(lookup(&json!("scalar"), "a"), None);
    }
}
