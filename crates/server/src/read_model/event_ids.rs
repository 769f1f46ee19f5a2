//! Event ids that name their own position: `$` + base64url(version byte, partition, sequence).
//!
//! An event's id is derived from where the log put it, so every node derives the same id, and
//! finding an event by id is a direct read of one log entry: no index to keep, nothing that grows
//! with history. Events stored before this scheme carry their own (hash) id in their JSON; those
//! are found only while they sit in a room's recent window.

use base64::Engine;

const ID_VERSION: u8 = 1;

/// The id of the room event stored at `seq` in `partition`.
pub fn event_id_at(partition: u32, seq: u64) -> String {
    let mut bytes = [0u8; 13];
    bytes[0] = ID_VERSION;
    bytes[1..5].copy_from_slice(&partition.to_be_bytes());
    bytes[5..13].copy_from_slice(&seq.to_be_bytes());
    format!("${}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Where the event `event_id` is stored, when the id is one of ours.
pub fn position_of(event_id: &str) -> Option<(u32, u64)> {
    let encoded = event_id.strip_prefix('$')?;
    if encoded.len() != 18 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).ok()?;
    if bytes.len() != 13 || bytes[0] != ID_VERSION {
        return None;
    }
    let partition = u32::from_be_bytes(bytes[1..5].try_into().ok()?);
    let seq = u64::from_be_bytes(bytes[5..13].try_into().ok()?);
    Some((partition, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_valid_matrix_ids() {
        for (partition, seq) in [(0, 1), (5, 123_456_789), (u32::MAX, u64::MAX)] {
            let id = event_id_at(partition, seq);
            assert!(haetae_matrix::ids::is_valid_event_id(&id), "{id}");
            assert_eq!(position_of(&id), Some((partition, seq)));
        }
        assert_eq!(position_of("$abc"), None);
        assert_eq!(position_of("$AAAAAAAAAAAAAAAAAA"), None);
        assert_eq!(position_of("not-an-id"), None);
        assert_eq!(position_of("$ü€€€€€€€€€€€€€€€€"), None);
    }
}
