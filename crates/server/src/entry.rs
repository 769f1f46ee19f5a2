//! What an event-log entry means: the one format every node writes and every node's read model
//! applies. Room entries go to the room's history, user entries to the user's.
//!
//! Stored format, versioned by the `v` field: a change here is a migration.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// 2: room events carry no `event_id` (derived from the position), state events their
/// `prev_content`, redactions their target.
pub const ENTRY_VERSION: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(default = "default_version")]
    pub v: u32,
    #[serde(flatten)]
    pub entry: Entry,
}

fn default_version() -> u32 {
    ENTRY_VERSION
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Entry {
    // ---- room entries ----
    /// A room event in client format (no `unsigned`). Since entry version 2 it carries no
    /// `event_id`: the id is derived from the entry's position (`read_model::event_ids`).
    Event {
        event: Value,
        /// The sending device's transaction, echoed to that device as `unsigned.transaction_id`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        txn: Option<Txn>,
        /// For state events: the content this event replaces (the state it was appended against
        /// is the state it lands on, since state events are compare-and-set on the room).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prev_content: Option<Value>,
        /// For redactions: the target as the appending node found it (`event_id`, `sender`,
        /// `room_id`, `type`; `relates_to`: the event a relation pointed at), so every node judges
        /// the redaction on the same facts even when the target is no longer in its memory. None:
        /// no such event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        redacts_target: Option<Value>,
    },
    /// A read receipt.
    Receipt { user_id: String, receipt_type: String, event_id: String, ts: u64, thread_id: Option<String> },

    // ---- user entries ----
    /// Global (room_id None) or per-room account data.
    AccountData { room_id: Option<String>, event_type: String, content: Value },
    /// A message for one device (or `*`: all of the user's devices).
    ToDevice { sender: String, device_id: String, event_type: String, content: Value },
    /// A device acknowledged (by syncing past them) its to-device messages up to `upto`.
    ToDeviceAck { device_id: String, upto: u64 },
    /// The user's end-to-end keys or device list changed.
    KeysChanged,
    /// Access tokens that stopped being valid (logout, device deletion, password change).
    TokensRevoked { token_hashes: Vec<String> },
    /// A filter the user stored.
    Filter { filter_id: String, filter: Value },
    /// The user's profile (display name, avatar).
    Profile { displayname: Option<String>, avatar_url: Option<String> },
    /// Pushers, stored whole.
    Pushers { pushers: Vec<Value> },
    /// The user forgot a room they had left: it leaves their room list and history.
    Forgotten { room_id: String },
    /// One tag of a room set (content Some) or removed (None): merged into the room's `m.tag`
    /// account data when applied, so concurrent tag changes from two devices both land.
    RoomTag { room_id: String, tag: String, content: Option<Value> },

    // ---- room entries (continued) ----
    /// The room's visibility in the published room directory (`public` or `private`).
    DirectoryVisibility { visibility: String },
    /// An administrator blocked the room (nobody may join it) or lifted the block. Applied even
    /// when the node does not know the room, so a block outlives a purge and may come first.
    RoomBlocked { blocked: bool, by: String },
    /// An administrator deleted the room with `purge`: every node drops it from its read model
    /// (its history, state and members' room lists); later entries of the room find no room.
    RoomPurged { by: String },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Txn {
    pub device_id: String,
    pub txn_id: String,
    /// Hash of (user, device, login session, room, txn id): the append's message id, and how a
    /// node recognises a retry that outlived the log's duplicate window.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

impl Envelope {
    pub fn new(entry: Entry) -> Envelope {
        Envelope { v: ENTRY_VERSION, entry }
    }

    pub fn to_bytes(&self) -> bytes::Bytes {
        // Serializing a tree of strings and JSON values cannot fail.
        bytes::Bytes::from(serde_json::to_vec(self).expect("entries serialize"))
    }
}
