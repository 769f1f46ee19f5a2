//! What a drill recorded: every send with its outcome, every event each client received through
//! `/sync`, every sync response time, the per-DC room timelines read at the end, and the instants
//! of the fault and the rebuild. The checker and the report read only this.
//!
//! Times are milliseconds since the drill's workload started (`at_ms`, `start_ms`, `end_ms`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    pub scenario: String,
    /// DC names, in deployment order.
    pub dcs: Vec<String>,
    /// The DC the fault hit (for `two-dcs-lost`, the first of the two), if any.
    pub fault_dc: Option<String>,
    /// Wall-clock time of `at_ms = 0`, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// How long the workload ran, milliseconds.
    pub duration_ms: f64,
    /// Instants worth marking on the timeline: "fire", "rebuild started", "partition healed"...
    pub marks: Vec<Mark>,
    pub clients: Vec<ClientInfo>,
    pub rooms: Vec<RoomInfo>,
    pub sends: Vec<SendRecord>,
    /// Events each client received through `/sync`, in the order it received them.
    pub received: Vec<Received>,
    /// Every `/sync` response (successful or not) each client got.
    pub syncs: Vec<SyncRecord>,
    /// Each DC's view of each room at the end, read through that DC's node only.
    pub timelines: Vec<DcTimeline>,
    /// Figures measured outside the workload.
    pub engine: EngineFigures,
    /// The login workload beside the chat, when it ran.
    #[serde(default)]
    pub login: Option<crate::drill::login::LoginHistory>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Mark {
    pub at_ms: f64,
    pub label: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClientInfo {
    pub user_id: String,
    /// The DC whose node the client talks to first.
    pub home_dc: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RoomInfo {
    pub room_id: String,
    /// Indexes into `History::clients`.
    pub members: Vec<usize>,
    /// The DC that held the leader of the room's event-log partition when the fault hit.
    pub leader_dc_at_fault: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendRecord {
    /// Index into `History::clients`.
    pub client: usize,
    /// Index into `History::rooms`.
    pub room: usize,
    pub txn_id: String,
    /// A value unique to this send, carried in the event content, so an event can be traced back
    /// to the send that made it.
    pub marker: String,
    pub start_ms: f64,
    pub end_ms: f64,
    /// Set when the homeserver acknowledged the send (HTTP 200).
    pub event_id: Option<String>,
    /// Set when the send finally failed (every endpoint tried, or a Matrix error).
    pub error: Option<String>,
    /// DCs the client tried for this send, in order (more than one when it failed over).
    pub dcs_tried: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Received {
    pub client: usize,
    pub room: usize,
    pub event_id: String,
    /// The marker from the event content; None for events the workload did not send
    /// (room creation, joins).
    pub marker: Option<String>,
    pub at_ms: f64,
    /// The DC whose node returned it.
    pub dc: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncRecord {
    pub client: usize,
    pub at_ms: f64,
    pub dc: String,
    /// None when the response was a success; otherwise what went wrong.
    pub error: Option<String>,
    /// The server said the timeline was limited (the client would have a gap to paginate).
    pub limited: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DcTimeline {
    pub dc: String,
    /// Index into `History::rooms`.
    pub room: usize,
    /// The room's `m.room.message` events, oldest first.
    pub events: Vec<TimelineEvent>,
    /// Reading this DC's view failed (the DC is down): why.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TimelineEvent {
    pub event_id: String,
    pub sender: String,
    pub marker: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EngineFigures {
    /// From the fault until every event-log partition whose leader was in the hit DC had a new
    /// leader elsewhere, as seen by polling JetStream; the engine's own share of the outage.
    pub election_ms: Option<f64>,
    /// The same for the key-value buckets a login writes (OAuth grants and sessions, tokens,
    /// devices) whose leader was in the hit DC (a few ms when none was).
    #[serde(default)]
    pub login_election_ms: Option<f64>,
    /// From the start of the rebuild until every stream had all replicas current and the rebuilt
    /// DC's node answered.
    pub rebuild_catch_up_ms: Option<f64>,
    /// Free-form facts about the deployment: sync policy, partitions, mode.
    pub notes: Vec<String>,
}
