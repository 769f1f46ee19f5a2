//! How stored events are shown to a client: `unsigned` (age, transaction id for the sending
//! device, previous content, redaction) and the event filter's field selection.

use serde_json::{Value, json};

use super::Caller;
use super::rooms::now_ms;
use crate::read_model::TimelineItem;

/// The client-format event of `item` as `viewer` should see it.
pub fn client_event(item: &TimelineItem, viewer: Option<&Caller>) -> Value {
    let mut event = (*item.event).clone();
    let mut unsigned = serde_json::Map::new();
    let ts = event["origin_server_ts"].as_u64().unwrap_or(0);
    unsigned.insert("age".into(), json!(now_ms().saturating_sub(ts)));
    if let (Some(txn), Some(viewer)) = (&item.txn, viewer)
        && txn.device_id == viewer.device_id
        && event["sender"].as_str() == Some(viewer.user_id.as_str())
    {
        unsigned.insert("transaction_id".into(), json!(txn.txn_id));
    }
    if let Some(prev) = &item.prev_content {
        unsigned.insert("prev_content".into(), (**prev).clone());
    }
    if let Some(redaction) = &item.redacted_because {
        unsigned.insert("redacted_because".into(), (**redaction).clone());
    }
    event["unsigned"] = Value::Object(unsigned);
    event
}

/// A state event as it sits in room state (no timeline item at hand).
pub fn state_event(event: &Value) -> Value {
    event.clone()
}

/// The stripped form of a state event, for invites.
pub fn stripped(event: &Value) -> Value {
    json!({
        "type": event["type"],
        "state_key": event["state_key"],
        "content": event["content"],
        "sender": event["sender"],
    })
}
