//! Pure Matrix rules for haetae: identifier grammar, power levels, room state,
//! the authorization rules of room versions 10 and 11, filters, push rules,
//! the redaction algorithm and the plan of events `POST /createRoom` produces.
//!
//! This crate owns the *meaning* of Matrix data. It never does IO, never
//! awaits, never reads a clock or a random number generator, and never
//! panics on input: events are arbitrary `serde_json::Value`s that came from
//! users, so every accessor tolerates missing keys and wrong types.
//!
//! Events are handled in the client format (`event_id`, `type`, `sender`,
//! `room_id`, `state_key` for state events, `content`, `origin_server_ts`,
//! `unsigned`). There is no federation: no signatures, no DAG, no state
//! resolution; each room has one linear history and auth is checked against
//! the room's current state.

pub mod auth;
pub mod filter;
pub mod ids;
pub mod power_levels;
pub mod push;
pub mod redaction;
pub mod room_creation;
pub mod state;

mod json_path;

pub use auth::AuthError;
pub use power_levels::PowerLevels;
pub use state::RoomState;

/// The room version `POST /createRoom` uses when the request names none.
pub const DEFAULT_ROOM_VERSION: &str = "11";

/// The room versions whose rules this crate implements. Rooms of any other
/// version are refused rather than run under the wrong rules.
pub const SUPPORTED_ROOM_VERSIONS: &[&str] = &["10", "11"];

/// Whether `version` is one of [`SUPPORTED_ROOM_VERSIONS`].
pub fn is_supported_room_version(version: &str) -> bool {
    SUPPORTED_ROOM_VERSIONS.contains(&version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_version_is_supported() {
        assert!(is_supported_room_version(DEFAULT_ROOM_VERSION));
        assert!(!is_supported_room_version("9"));
        assert!(!is_supported_room_version(""));
    }
}
