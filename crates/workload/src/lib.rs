//! The Matrix client workload shared by the fire drill and the benchmark.
//!
//! - [`client`]: a minimal Client-Server API client with endpoint failover and txn-id retries.
//! - [`chat`]: users in rooms, senders and long-polling receivers; acknowledged and delivered
//!   messages with their latencies.
//! - [`history`]: grows a server's history and measures it at checkpoints (memory, restart,
//!   sync, history reads, chat latency with that history underneath).
//! - [`sliding`]: a user in 20 or 5,000 rooms opening the room list over sliding sync (the chat
//!   workload measures delivery over sliding sync with [`chat::Receiver`]).
//! - [`stats`]: percentiles and the process's own CPU use.
//!
//! It talks to homeservers only over HTTP, so the same workload runs against any of them.

pub mod big_room;
pub mod chat;
pub mod client;
pub mod drill;
pub mod history;
pub mod idle;
pub mod initial_sync;
pub mod login_storm;
pub mod setup;
pub mod sliding;
pub mod stats;
