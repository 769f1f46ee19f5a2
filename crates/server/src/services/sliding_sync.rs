//! Simplified sliding sync (MSC4186): the sync Element X and matrix-rust-sdk clients use. A
//! request names lists (ranges over the caller's rooms, most recently bumped first) and room
//! subscriptions; the answer carries those rooms (in full the first time a connection sees a
//! room, then only what changed) and the extensions' data (to-device, e2ee, account data).
//!
//! A connection (user, device, `conn_id`) keeps its state in the replicated `SlidingSync`
//! bucket: which rooms it has sent (and in which response), and the event-log positions each
//! `pos` it handed out stands for. A `pos` is therefore valid at every node in every DC; one the
//! bucket does not know (expired, dropped, or from a connection since restarted) answers
//! `M_UNKNOWN_POS` and the client starts over. Rooms are ordered by the read model's bump
//! stamps, which need no room read back (cold rooms stay cold until they are in a range).
//!
//! Not here yet: typing and receipts extensions, list sorting options other than recency,
//! filters other than `is_invite`, `is_dm`, `room_types` and `not_room_types`, left rooms.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::Duration;

use haetae_store::Bucket;
use haetae_store::kv::{KeyPath, KvError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::events::client_event;
use super::rooms::now_ms;
use super::sync::{invite_state_of, receipt_event_for, room_token, unread_counts_of};
use super::{App, Caller};
use crate::error::{ApiResult, MatrixError};
use crate::read_model::recency::{ListFilter, ListView, TypeFilter};
use crate::read_model::{Membership, User};
use crate::read_model::event_ids::position_of;

/// Connections kept per device; a new one beyond it drops the least recently used.
const MAX_CONNECTIONS_PER_DEVICE: usize = 10;
/// Rooms a connection remembers having sent; beyond it the earliest sent are forgotten (and sent
/// again in full if they come back into view).
const MAX_ROOMS_PER_CONNECTION: usize = 5_000;
/// Positions a connection keeps answering to: the latest and a few before it (a client retries
/// a request whose answer it lost).
const MAX_KEPT_POSITIONS: usize = 4;
/// Lists per request.
const MAX_LISTS: usize = 50;
/// Ranges per list.
const MAX_RANGES: usize = 100;
/// Room types named in a list's `room_types` and `not_room_types`.
const MAX_ROOM_TYPES: usize = 50;
/// Room subscriptions a connection holds.
const MAX_SUBSCRIPTIONS: usize = 500;
/// Rooms in one response (over all lists and subscriptions).
const MAX_ROOMS_PER_RESPONSE: usize = 500;
/// `required_state` entries per list or subscription.
const MAX_REQUIRED_STATE: usize = 100;
/// Bytes of a connection id.
const MAX_CONN_ID_BYTES: usize = 255;
/// To-device messages per response (the client asks again with `next_batch`).
const MAX_TO_DEVICE_PER_RESPONSE: usize = 200;
/// Heroes shown for a room without a name.
const MAX_HEROES: usize = 5;

#[derive(Deserialize)]
pub struct SlidingQuery {
    pos: Option<String>,
    timeout: Option<String>,
}

/// What a list or subscription asks for of each of its rooms.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RoomConfig {
    #[serde(default)]
    required_state: Vec<(String, String)>,
    #[serde(default)]
    timeline_limit: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ListFilters {
    #[serde(default)]
    is_invite: Option<bool>,
    #[serde(default)]
    is_dm: Option<bool>,
    #[serde(default)]
    room_types: Option<Vec<Option<String>>>,
    #[serde(default)]
    not_room_types: Vec<Option<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ListConfig {
    #[serde(default)]
    ranges: Vec<(u64, u64)>,
    #[serde(default)]
    required_state: Vec<(String, String)>,
    #[serde(default)]
    timeline_limit: Option<u64>,
    #[serde(default)]
    filters: ListFilters,
}

#[derive(Debug, Default, Deserialize)]
pub struct Toggle {
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ToDeviceExtension {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Extensions {
    #[serde(default)]
    to_device: ToDeviceExtension,
    #[serde(default)]
    e2ee: Toggle,
    #[serde(default)]
    account_data: Toggle,
    #[serde(default)]
    receipts: Toggle,
    #[serde(default)]
    typing: Toggle,
}

#[derive(Debug, Default, Deserialize)]
pub struct SlidingRequest {
    #[serde(default)]
    conn_id: Option<String>,
    #[serde(default)]
    txn_id: Option<String>,
    #[serde(default)]
    lists: BTreeMap<String, ListConfig>,
    #[serde(default)]
    room_subscriptions: BTreeMap<String, RoomConfig>,
    #[serde(default)]
    unsubscribe_rooms: Vec<String>,
    #[serde(default)]
    extensions: Extensions,
}

/// A connection's state, as kept in the `SlidingSync` bucket.
#[derive(Debug, Default, Deserialize, Serialize)]
struct Connection {
    /// When the connection started (ms): part of every `pos`, so a restarted connection's new
    /// positions never match an old one's.
    epoch: u64,
    /// The number the next `pos` gets.
    next: u64,
    /// The latest positions handed out, oldest first.
    issued: VecDeque<Issued>,
    /// Rooms this connection has shown -> (the `pos` number of the latest response that covered
    /// them, the position in the room's partition it covered them up to). A room's window starts
    /// where the request's `pos` had it, so no request leaves a gap in a room's timeline, even
    /// when the room left the list's range for a while.
    rooms: BTreeMap<String, (u64, u64)>,
    /// The coverings of those rooms before the latest, oldest first (at most
    /// [`MAX_KEPT_POSITIONS`] each, and only while a kept position needs them). A request from an
    /// older `pos` (a retry of a lost answer, or one the client cancelled and sent again, as
    /// matrix-rust-sdk does when it changes its room subscriptions) continues each room from what
    /// that `pos` had: no event twice, no room sent in full again.
    #[serde(default)]
    earlier: BTreeMap<String, Vec<(u64, u64)>>,
    /// Each list's room count as last sent.
    list_counts: BTreeMap<String, u64>,
    /// Room subscriptions (sticky until unsubscribed).
    subscriptions: BTreeMap<String, RoomConfig>,
    last_used_ms: u64,
}

impl Connection {
    /// How far the response numbered `number` (or an earlier one) covered the room, if any did.
    fn shown_upto(&self, room_id: &str, number: u64) -> Option<u64> {
        let (latest, upto) = self.rooms.get(room_id)?;
        if *latest <= number {
            return Some(*upto);
        }
        let earlier = self.earlier.get(room_id)?;
        earlier.iter().rev().find(|(covered, _)| *covered <= number).map(|(_, upto)| *upto)
    }

    /// Drops the earlier coverings no kept position can ask for: one is needed while the
    /// covering after it is later than the oldest kept position.
    fn forget_unneeded_coverings(&mut self) {
        let oldest = self.issued.front().map(|issued| issued.number).unwrap_or(0);
        let rooms = &self.rooms;
        self.earlier.retain(|room_id, earlier| {
            let Some((latest, _)) = rooms.get(room_id) else { return false };
            let nexts: Vec<u64> = earlier.iter().skip(1).map(|(n, _)| *n).chain([*latest]).collect();
            let mut nexts = nexts.into_iter();
            earlier.retain(|_| nexts.next().is_some_and(|next| next > oldest));
            !earlier.is_empty()
        });
    }
}

/// What one `pos` stands for.
#[derive(Clone, Debug, Deserialize, Serialize)]
struct Issued {
    number: u64,
    /// The event-log positions (one per partition) the response reflected.
    positions: Vec<u64>,
    /// The node that answered and its typing serial then (typing is per node).
    node: String,
    typing: u64,
}

/// What the request's `pos` stands for.
struct Since {
    number: u64,
    positions: Vec<u64>,
    /// The typing serial the previous response reflected, if it came from this node.
    typing: Option<u64>,
}

fn encode_pos(epoch: u64, number: u64) -> String {
    format!("{epoch}_{number}")
}

fn parse_pos(pos: &str) -> Option<(u64, u64)> {
    let (epoch, number) = pos.split_once('_')?;
    Some((epoch.parse().ok()?, number.parse().ok()?))
}

fn unknown_pos() -> MatrixError {
    MatrixError::new(axum::http::StatusCode::BAD_REQUEST, "M_UNKNOWN_POS", "Unknown position: start a new connection")
}

fn kv_error(error: KvError) -> MatrixError {
    MatrixError::unavailable(error)
}

fn connection_key(caller: &Caller, conn_id: &str) -> KeyPath {
    KeyPath::new(&[caller.user_id.as_str(), caller.device_id.as_str(), conn_id])
}

pub async fn sync(app: &App, caller: &Caller, query: SlidingQuery, mut request: SlidingRequest) -> ApiResult<Value> {
    let conn_id = request.conn_id.clone().unwrap_or_default();
    if conn_id.len() > MAX_CONN_ID_BYTES {
        return Err(MatrixError::invalid_param("conn_id too long"));
    }
    if request.lists.len() > MAX_LISTS {
        return Err(MatrixError::invalid_param(format!("at most {MAX_LISTS} lists")));
    }
    if request.lists.values().any(|l| l.ranges.len() > MAX_RANGES) {
        return Err(MatrixError::invalid_param(format!("at most {MAX_RANGES} ranges per list")));
    }
    let type_count = |f: &ListFilters| f.room_types.as_ref().map_or(0, Vec::len) + f.not_room_types.len();
    if request.lists.values().any(|l| type_count(&l.filters) > MAX_ROOM_TYPES) {
        return Err(MatrixError::invalid_param(format!("at most {MAX_ROOM_TYPES} room types per list")));
    }
    if request.room_subscriptions.len() > MAX_SUBSCRIPTIONS {
        return Err(MatrixError::invalid_param(format!("at most {MAX_SUBSCRIPTIONS} room subscriptions")));
    }
    let too_much_state = request.lists.values().any(|l| l.required_state.len() > MAX_REQUIRED_STATE)
        || request.room_subscriptions.values().any(|r| r.required_state.len() > MAX_REQUIRED_STATE);
    if too_much_state {
        return Err(MatrixError::invalid_param(format!("at most {MAX_REQUIRED_STATE} required_state entries")));
    }
    let timeout_ms = match &query.timeout {
        Some(text) => text.parse::<u64>().map_err(|_| MatrixError::invalid_param("timeout must be a number"))?,
        None => 0,
    }
    .min(app.config.limits.max_sync_timeout_ms);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let key = connection_key(caller, &conn_id);
    let kv = app.store.kv();
    let (mut connection, since) = match &query.pos {
        Some(pos) => {
            let (epoch, number) = parse_pos(pos).ok_or_else(unknown_pos)?;
            let stored = kv.get(Bucket::SlidingSync, &key).await.map_err(kv_error)?.ok_or_else(unknown_pos)?;
            let connection: Connection = serde_json::from_slice(&stored.value).map_err(|_| unknown_pos())?;
            let issued = connection
                .issued
                .iter()
                .find(|issued| issued.number == number)
                .filter(|issued| connection.epoch == epoch && issued.positions.len() == app.model.partitions() as usize)
                .cloned()
                .ok_or_else(unknown_pos)?;
            let typing = (issued.node == app.node).then_some(issued.typing);
            (connection, Some(Since { number, positions: issued.positions, typing }))
        }
        None => {
            forget_old_connections(app, caller).await;
            (Connection { epoch: now_ms(), ..Connection::default() }, None)
        }
    };
    for room_id in &request.unsubscribe_rooms {
        connection.subscriptions.remove(room_id);
    }
    for (room_id, config) in std::mem::take(&mut request.room_subscriptions) {
        connection.subscriptions.insert(room_id, config);
    }
    while connection.subscriptions.len() > MAX_SUBSCRIPTIONS {
        connection.subscriptions.pop_first();
    }
    if let Some(since) = &since {
        // The position may come from a node further ahead (another DC): catch up first.
        let wait = Duration::from_millis(timeout_ms.max(5_000));
        if !app.model.wait_positions(&since.positions, wait).await {
            return Err(MatrixError::unavailable("this node has not caught up with your position yet"));
        }
    }
    acknowledge_to_device(app, caller, &request.extensions.to_device).await?;
    let waker = app.model.waker(&caller.user_id);
    let built = loop {
        let notified = waker.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let built = build(app, caller, &request, &connection, since.as_ref()).await;
        if !built.empty || since.is_none() || tokio::time::Instant::now() >= deadline {
            break built;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            break build(app, caller, &request, &connection, since.as_ref()).await;
        }
    };
    let number = save(app, &key, connection, since.as_ref(), &built).await?;
    let mut response = built.response;
    response["pos"] = json!(encode_pos(number.0, number.1));
    if let Some(txn_id) = &request.txn_id {
        response["txn_id"] = json!(txn_id);
    }
    Ok(response)
}

/// Records the response in the connection (compare-and-set, so concurrent requests on one
/// connection both land) and returns its (epoch, `pos` number).
async fn save(app: &App, key: &KeyPath, connection: Connection, since: Option<&Since>, built: &Built) -> ApiResult<(u64, u64)> {
    let fresh = since.is_none();
    let template = &connection;
    let written = app
        .store
        .kv()
        .modify(Bucket::SlidingSync, key, |current| {
            let mut connection = match (current, fresh) {
                (Some(bytes), false) => {
                    let mut stored: Connection = serde_json::from_slice(bytes).map_err(|_| unknown_pos())?;
                    if stored.epoch != template.epoch {
                        // The connection was restarted meanwhile: this position is gone.
                        return Err(unknown_pos());
                    }
                    stored.subscriptions = template.subscriptions.clone();
                    stored
                }
                (None, false) => return Err(unknown_pos()),
                (_, true) => {
                    Connection { epoch: template.epoch, subscriptions: template.subscriptions.clone(), ..Connection::default() }
                }
            };
            let number = connection.next.max(1);
            connection.next = number + 1;
            connection.issued.push_back(Issued {
                number,
                positions: built.positions.clone(),
                node: app.node.clone(),
                typing: built.typing,
            });
            while connection.issued.len() > MAX_KEPT_POSITIONS {
                connection.issued.pop_front();
            }
            for (room_id, upto) in &built.covered_rooms {
                if let Some(previous) = connection.rooms.insert(room_id.clone(), (number, *upto)) {
                    let earlier = connection.earlier.entry(room_id.clone()).or_default();
                    earlier.push(previous);
                    if earlier.len() > MAX_KEPT_POSITIONS {
                        earlier.remove(0);
                    }
                }
            }
            for room_id in &built.left_rooms {
                connection.rooms.remove(room_id);
            }
            if connection.rooms.len() > MAX_ROOMS_PER_CONNECTION {
                let mut by_age: Vec<(u64, String)> = connection.rooms.iter().map(|(r, (n, _))| (*n, r.clone())).collect();
                by_age.sort();
                let excess = connection.rooms.len() - MAX_ROOMS_PER_CONNECTION;
                for (_, room_id) in by_age.into_iter().take(excess) {
                    connection.rooms.remove(&room_id);
                }
            }
            connection.forget_unneeded_coverings();
            connection.list_counts = built.list_counts.clone();
            connection.last_used_ms = now_ms();
            Ok(Some(serde_json::to_vec(&connection).unwrap_or_default().into()))
        })
        .await
        .map_err(kv_error)?;
    let bytes = written?;
    let connection: Connection = serde_json::from_slice(&bytes).map_err(|_| MatrixError::unavailable("connection state"))?;
    Ok((connection.epoch, connection.next - 1))
}

/// Keeps at most [`MAX_CONNECTIONS_PER_DEVICE`] connections per device (the least recently used
/// go). Best effort: a failure leaves them to the bucket's expiry.
async fn forget_old_connections(app: &App, caller: &Caller) {
    let kv = app.store.kv();
    let prefix = KeyPath::new(&[caller.user_id.as_str(), caller.device_id.as_str()]);
    let Ok(listing) = kv.list(Bucket::SlidingSync, &prefix, MAX_CONNECTIONS_PER_DEVICE * 4, true).await else {
        return;
    };
    if listing.entries.len() < MAX_CONNECTIONS_PER_DEVICE {
        return;
    }
    let mut by_use: Vec<(u64, Vec<String>)> = listing
        .entries
        .into_iter()
        .map(|(segments, versioned)| {
            let used = serde_json::from_slice::<Connection>(&versioned.value).map(|c| c.last_used_ms).unwrap_or(0);
            (used, segments)
        })
        .collect();
    by_use.sort();
    let excess = by_use.len() + 1 - MAX_CONNECTIONS_PER_DEVICE;
    for (_, segments) in by_use.into_iter().take(excess) {
        let mut path = vec![caller.user_id.clone(), caller.device_id.clone()];
        path.extend(segments);
        let _ = kv.delete(Bucket::SlidingSync, &KeyPath(path)).await;
    }
}

/// Acknowledges the to-device messages up to the extension's `since`: they are dropped (through
/// the log, so every node drops them) and never delivered again.
async fn acknowledge_to_device(app: &App, caller: &Caller, extension: &ToDeviceExtension) -> ApiResult<()> {
    match extension.since.as_deref().and_then(|s| s.parse::<u64>().ok()) {
        Some(upto) => super::sync::acknowledge_to_device_upto(app, caller, upto).await,
        None => Ok(()),
    }
}

/// A response before its `pos`, and what the connection records of it.
struct Built {
    response: Value,
    /// Nothing for the client: a long poll keeps waiting.
    empty: bool,
    positions: Vec<u64>,
    /// This node's typing serial the response reflects.
    typing: u64,
    /// Rooms this response brings the client up to date with (sent, or in view with nothing
    /// new), with the position in their partition it covers.
    covered_rooms: Vec<(String, u64)>,
    /// Rooms the caller left that this response shows for the last time.
    left_rooms: Vec<String>,
    list_counts: BTreeMap<String, u64>,
}

/// What one room is asked for (merged over the lists and subscriptions that include it).
#[derive(Default)]
struct Wanted {
    timeline_limit: u64,
    required_state: BTreeSet<(String, String)>,
}

impl Wanted {
    fn add(&mut self, timeline_limit: Option<u64>, required_state: &[(String, String)]) {
        self.timeline_limit = self.timeline_limit.max(timeline_limit.unwrap_or(0));
        self.required_state.extend(required_state.iter().cloned());
    }
}

async fn build(app: &App, caller: &Caller, request: &SlidingRequest, connection: &Connection, since: Option<&Since>) -> Built {
    // Positions first: everything up to them is applied; later events wait for the next request.
    let positions = app.model.positions();
    // A copy of the (small) typing state, as `/sync` takes it.
    let (typing_serial, typing_rooms, typing_room_serial) = {
        let typing = app.model.typing.lock().expect("typing lock");
        (typing.serial, typing.rooms.clone(), typing.room_serial.clone())
    };
    let me = caller.user_id.as_str();
    let (views, memberships, left) = app.model.with_user(me, |user| {
        // Rooms the connection has shown that the caller has since left (or was removed from).
        let left: Vec<String> = connection
            .rooms
            .keys()
            .filter(|room_id| matches!(user.rooms.get(*room_id), Some(Membership::Leave | Membership::Ban) | None))
            .cloned()
            .collect();
        let direct: HashSet<String> = user
            .account_data
            .get("m.direct")
            .and_then(|(_, content)| content.as_object())
            .map(|by_user| {
                by_user.values().filter_map(Value::as_array).flatten().filter_map(Value::as_str).map(str::to_string).collect()
            })
            .unwrap_or_default();
        let (views, memberships) = lists_by_recency(user, request, connection, &direct);
        (views, memberships, left)
    });
    let mut wanted: BTreeMap<String, Wanted> = BTreeMap::new();
    let mut lists = Map::new();
    let mut list_counts = BTreeMap::new();
    let mut counts_changed = false;
    for ((name, list), view) in request.lists.iter().zip(views) {
        let count = view.count;
        counts_changed |= since.is_none() || connection.list_counts.get(name) != Some(&count);
        list_counts.insert(name.clone(), count);
        lists.insert(name.clone(), json!({ "count": count }));
        for room_id in view.rooms {
            if wanted.len() >= MAX_ROOMS_PER_RESPONSE && !wanted.contains_key(&room_id) {
                break;
            }
            wanted.entry(room_id).or_default().add(list.timeline_limit, &list.required_state);
        }
    }
    for (room_id, config) in &connection.subscriptions {
        if memberships.contains_key(room_id.as_str()) && (wanted.len() < MAX_ROOMS_PER_RESPONSE || wanted.contains_key(room_id)) {
            wanted.entry(room_id.clone()).or_default().add(config.timeline_limit, &config.required_state);
        }
    }
    let mut rooms = Map::new();
    let mut covered_rooms = Vec::new();
    let mut receipts = Map::new();
    let mut typing = Map::new();
    for (room_id, want) in &wanted {
        let Some((membership, bump)) = memberships.get(room_id.as_str()).copied() else { continue };
        let shown_upto = since.and_then(|s| connection.shown_upto(room_id, s.number));
        let p = app.model.partition_of(room_id) as usize;
        let high = positions[p];
        let window = RoomWindow { low: shown_upto.unwrap_or(0).min(high), high, known: shown_upto.is_some(), bump };
        covered_rooms.push((room_id.clone(), high));
        let section = match membership {
            Membership::Invite => invited_room(app, me, room_id, &window),
            _ => joined_room(app, caller, room_id, want, &window).await,
        };
        if membership == Membership::Join {
            if request.extensions.receipts.enabled == Some(true)
                && let Some(event) = room_receipts(app, me, room_id, &window, section.as_ref())
            {
                receipts.insert(room_id.clone(), event);
            }
            let typing_changed =
                typing_room_serial.get(room_id).is_some_and(|serial| since.and_then(|s| s.typing).is_none_or(|s| *serial > s));
            let typists: Vec<&String> = typing_rooms.get(room_id).map(|users| users.keys().collect()).unwrap_or_default();
            let new_in_view = !window.known && !typists.is_empty();
            if request.extensions.typing.enabled == Some(true) && (typing_changed || new_in_view) {
                typing.insert(room_id.clone(), json!({ "type": "m.typing", "content": { "user_ids": typists } }));
            }
        }
        if let Some(section) = section {
            rooms.insert(room_id.clone(), section);
        }
    }
    // A room the caller left is sent once more, up to their leave, so the client sees them go;
    // then the connection forgets it.
    let left_limit = request.lists.values().filter_map(|l| l.timeline_limit).max().unwrap_or(1);
    for room_id in &left {
        let Some((_, upto)) = connection.rooms.get(room_id) else { continue };
        if since.is_none() {
            continue;
        }
        let p = app.model.partition_of(room_id) as usize;
        let (leave_seq, left_at) = app
            .model
            .with_room(room_id, |room| {
                let left_at = room.state.get("m.room.member", me).and_then(|event| event["origin_server_ts"].as_u64());
                (room.membership_seq(me), left_at.unwrap_or(0))
            })
            .unwrap_or((None, 0));
        let high = positions[p].min(leave_seq.unwrap_or(positions[p]));
        let window = RoomWindow { low: (*upto).min(high), high, known: true, bump: left_at };
        let want = Wanted { timeline_limit: left_limit, required_state: BTreeSet::new() };
        if let Some(section) = joined_room(app, caller, room_id, &want, &window).await {
            rooms.insert(room_id.clone(), section);
        }
    }
    let (mut extensions, extensions_empty) = extensions(app, caller, request, since, &positions).await;
    let empty = rooms.is_empty() && !counts_changed && extensions_empty && receipts.is_empty() && typing.is_empty();
    if request.extensions.receipts.enabled == Some(true) {
        extensions["receipts"] = json!({ "rooms": receipts });
    }
    if request.extensions.typing.enabled == Some(true) {
        extensions["typing"] = json!({ "rooms": typing });
    }
    Built {
        response: json!({ "lists": lists, "rooms": rooms, "extensions": extensions }),
        empty,
        positions,
        typing: typing_serial,
        covered_rooms,
        left_rooms: left,
        list_counts,
    }
}

/// Each list's count and rooms in its ranges, from the caller's recency index (the first rooms
/// of a list cost the same at 20 rooms as at 5,000: no sort of every room), and the membership
/// and bump stamp of each room in view or subscribed to. Joined rooms are ordered by their
/// rooms' stamps; an invite is bumped by the invite itself.
fn lists_by_recency(
    user: &User,
    request: &SlidingRequest,
    connection: &Connection,
    direct: &HashSet<String>,
) -> (Vec<ListView>, BTreeMap<String, (Membership, u64)>) {
    let views: Vec<ListView> = request
        .lists
        .values()
        .map(|list| {
            let types = (list.filters.room_types.is_some() || !list.filters.not_room_types.is_empty()).then(|| TypeFilter {
                room_types: list.filters.room_types.clone(),
                not_room_types: list.filters.not_room_types.clone(),
            });
            let filter = ListFilter { is_invite: list.filters.is_invite, is_dm: list.filters.is_dm, types: types.as_ref() };
            user.recency.list(filter, direct, &list.ranges, MAX_ROOMS_PER_RESPONSE)
        })
        .collect();
    let in_view = views.iter().flat_map(|view| view.rooms.iter()).chain(connection.subscriptions.keys());
    let memberships = in_view
        .filter_map(|room_id| {
            let (stamp, invite) = user.recency.get(room_id)?;
            Some((room_id.clone(), (if invite { Membership::Invite } else { Membership::Join }, stamp)))
        })
        .collect();
    (views, memberships)
}

/// The receipts a room's view needs: the new ones for a room the connection has shown, else the
/// caller's own and those on the events of the timeline sent.
fn room_receipts(app: &App, me: &str, room_id: &str, window: &RoomWindow, section: Option<&Value>) -> Option<Value> {
    let shown: HashSet<&str> = section
        .and_then(|s| s["timeline"].as_array())
        .map(|events| events.iter().filter_map(|e| e["event_id"].as_str()).collect())
        .unwrap_or_default();
    let receipts = app.model.with_room(room_id, |room| {
        if window.known {
            room.receipts_between(window.low, window.high).into_iter().cloned().collect::<Vec<_>>()
        } else {
            room.receipts_between(0, window.high)
                .into_iter()
                .filter(|r| r.user_id == me || shown.contains(r.event_id.as_str()))
                .cloned()
                .collect()
        }
    })?;
    receipt_event_for(receipts, me)
}

/// The part of a room's history a response covers.
struct RoomWindow {
    /// Events with `low < seq <= high` (low 0: the room is new to the connection).
    low: u64,
    high: u64,
    /// The connection has sent this room before (an incremental section).
    known: bool,
    bump: u64,
}

fn invited_room(app: &App, me: &str, room_id: &str, window: &RoomWindow) -> Option<Value> {
    app.model
        .with_room(room_id, |room| {
            let changed = room.membership_changes_between(window.low, window.high).iter().any(|(_, user, _)| *user == me);
            if window.known && !changed {
                return None;
            }
            let name = room.state.content("m.room.name", "").and_then(|c| c["name"].as_str().map(str::to_string));
            let mut section = json!({
                "initial": true,
                "invite_state": invite_state_of(room, me),
                "bump_stamp": window.bump,
                "joined_count": room.state.member_count("join"),
                "invited_count": room.state.member_count("invite"),
            });
            if let Some(name) = name {
                section["name"] = json!(name);
            }
            Some(section)
        })
        .flatten()
}

/// Whether `required_state` asks for the state event (`event_type`, `state_key`); `$LAZY`
/// members are chosen by the caller (timeline senders).
fn state_wanted(required: &BTreeSet<(String, String)>, me: &str, event_type: &str, state_key: &str) -> bool {
    required.iter().any(|(t, k)| {
        let type_matches = t == "*" || t == event_type;
        let key_matches = k == "*" || k == state_key || (k == "$ME" && state_key == me);
        type_matches && key_matches && k != "$LAZY"
    })
}

async fn joined_room(app: &App, caller: &Caller, room_id: &str, want: &Wanted, window: &RoomWindow) -> Option<Value> {
    let me = caller.user_id.as_str();
    let (visible_from, news) = app.model.with_room(room_id, |room| {
        let visible_from = room.visible_from(me);
        let news = room.window_between(window.low.max(visible_from.saturating_sub(1)), window.high).next().is_some()
            || room.membership_changes_between(window.low, window.high).iter().any(|(_, user, _)| *user == me);
        (visible_from, news)
    })?;
    if window.known && !news {
        return None;
    }
    let limit = (want.timeline_limit as usize).min(app.config.limits.max_events_per_response);
    let floor = if window.known { (window.low + 1).max(visible_from) } else { visible_from };
    let page = app.model.page_back(app.store.log(), room_id, window.high.saturating_add(1), floor, limit + 1, |_| true).await;
    let mut shown = match page {
        Ok(page) => page.items,
        Err(error) => {
            tracing::warn!(room_id, %error, "sliding sync timeline incomplete");
            Vec::new()
        }
    };
    let limited = shown.len() > limit || (limit == 0 && !window.known);
    shown.truncate(limit);
    shown.reverse();
    let first_seq = shown.first().map(|i| i.seq).unwrap_or(window.high + 1);
    let timeline: Vec<Value> = shown.iter().map(|item| client_event(item, Some(caller))).collect();
    let num_live = if window.known { shown.len() } else { 0 };
    let lazy = want.required_state.iter().any(|(t, k)| (t == "m.room.member" || t == "*") && k == "$LAZY");
    let senders: HashSet<&str> = shown.iter().map(|item| &*item.sender).collect();
    let (required_state, name, avatar, heroes, joined_count, invited_count) = app.model.with_room(room_id, |room| {
        let required_state: Vec<Value> = room
            .state
            .refs()
            .filter(|event| {
                let lazy_member = lazy && event.event_type == "m.room.member" && senders.contains(event.state_key);
                if !lazy_member && !state_wanted(&want.required_state, me, event.event_type, event.state_key) {
                    return false;
                }
                if !window.known {
                    return true;
                }
                // Incremental: the state that changed since (and lazy members of new senders).
                let seq = event.event_id.and_then(position_of).map(|(_, seq)| seq);
                lazy_member || seq.is_some_and(|seq| seq > window.low && seq <= window.high)
            })
            .map(|event| event.parse())
            .collect();
        let name = room.state.content("m.room.name", "").and_then(|c| c["name"].as_str().map(str::to_string));
        let avatar = room.state.content("m.room.avatar", "").and_then(|c| c["url"].as_str().map(str::to_string));
        let heroes: Vec<Value> = if name.is_none() {
            room.state
                .members("join")
                .chain(room.state.members("invite"))
                .filter(|user| *user != me)
                .take(MAX_HEROES)
                .map(|user| {
                    let content = room.state.content("m.room.member", user).unwrap_or_default();
                    let mut hero = json!({ "user_id": user });
                    if let Some(displayname) = content["displayname"].as_str() {
                        hero["displayname"] = json!(displayname);
                    }
                    if let Some(avatar_url) = content["avatar_url"].as_str() {
                        hero["avatar_url"] = json!(avatar_url);
                    }
                    hero
                })
                .collect()
        } else {
            Vec::new()
        };
        (required_state, name, avatar, heroes, room.state.member_count("join"), room.state.member_count("invite"))
    })?;
    let (notification_count, highlight_count) = unread_counts_of(app, caller, room_id, window.high);
    let mut section = json!({
        "timeline": timeline,
        "required_state": required_state,
        "prev_batch": room_token(first_seq),
        "limited": limited,
        "num_live": num_live,
        "bump_stamp": window.bump,
        "joined_count": joined_count,
        "invited_count": invited_count,
        "notification_count": notification_count,
        "highlight_count": highlight_count,
    });
    if !window.known {
        section["initial"] = json!(true);
    }
    if let Some(name) = name {
        section["name"] = json!(name);
    }
    if let Some(avatar) = avatar {
        section["avatar"] = json!(avatar);
    }
    if !heroes.is_empty() {
        section["heroes"] = json!(heroes);
    }
    Some(section)
}

/// The extensions' data, and whether it holds nothing new for the client.
async fn extensions(
    app: &App,
    caller: &Caller,
    request: &SlidingRequest,
    since: Option<&Since>,
    positions: &[u64],
) -> (Value, bool) {
    let me = caller.user_id.as_str();
    let user_partition = app.model.partition_of(me) as usize;
    let user_low = since.map(|s| s.positions[user_partition]).unwrap_or(0);
    let user_high = positions[user_partition];
    let mut extensions = Map::new();
    let mut empty = true;
    let to_device = &request.extensions.to_device;
    if to_device.enabled == Some(true) {
        let after = to_device.since.as_deref().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let limit = to_device.limit.unwrap_or(MAX_TO_DEVICE_PER_RESPONSE).clamp(1, MAX_TO_DEVICE_PER_RESPONSE);
        let messages: Vec<(u64, Value)> = app.model.with_user(me, |user| {
            user.to_device
                .iter()
                .filter(|m| m.device_id == caller.device_id && m.seq > after && m.seq <= user_high)
                .take(limit)
                .map(|m| (m.seq, m.event.clone()))
                .collect()
        });
        let next_batch =
            if messages.len() == limit { messages.last().map(|(seq, _)| *seq).unwrap_or(user_high) } else { user_high };
        empty &= messages.is_empty();
        let events: Vec<Value> = messages.into_iter().map(|(_, event)| event).collect();
        extensions.insert("to_device".into(), json!({ "next_batch": next_batch.to_string(), "events": events }));
    }
    if request.extensions.e2ee.enabled == Some(true) {
        let (otk_counts, fallback_types) = super::keys::counts_for_sync(app, me, &caller.device_id).await;
        let mut changed: BTreeSet<String> = BTreeSet::new();
        let mut left: Vec<String> = Vec::new();
        if let Some(since) = since {
            match app.model.key_changes_between(&since.positions, positions) {
                Some(users) => {
                    changed.extend(users.into_iter().filter(|user| user == me || app.model.share_a_room(me, user)));
                }
                // This node no longer remembers that far back: the caller re-reads its own keys.
                None => {
                    changed.insert(me.to_string());
                }
            }
            left = app.model.users_left_between(me, &since.positions, positions);
            for user in &left {
                changed.remove(user);
            }
        }
        empty &= changed.is_empty() && left.is_empty();
        extensions.insert(
            "e2ee".into(),
            json!({
                "device_lists": { "changed": changed, "left": left },
                "device_one_time_keys_count": otk_counts,
                "device_unused_fallback_key_types": fallback_types,
            }),
        );
    }
    if request.extensions.account_data.enabled == Some(true) {
        let in_window = |seq: u64| seq > user_low && seq <= user_high;
        let (mut global, rooms, has_push_rules) = app.model.with_user(me, |user| {
            let global: Vec<Value> = user
                .account_data
                .iter()
                .filter(|(_, (seq, _))| in_window(*seq))
                .map(|(event_type, (_, content))| json!({ "type": event_type, "content": content }))
                .collect();
            let mut rooms = Map::new();
            for (room_id, events) in &user.room_account_data {
                let events: Vec<Value> = events
                    .iter()
                    .filter(|(_, (seq, _))| in_window(*seq))
                    .map(|(event_type, (_, content))| json!({ "type": event_type, "content": content }))
                    .collect();
                if !events.is_empty() {
                    rooms.insert(room_id.clone(), json!(events));
                }
            }
            (global, rooms, user.account_data.contains_key("m.push_rules"))
        });
        if since.is_none() && !has_push_rules {
            global.push(json!({ "type": "m.push_rules", "content": *app.default_push_rules.get(me) }));
        }
        empty &= global.is_empty() && rooms.is_empty();
        extensions.insert("account_data".into(), json!({ "global": global, "rooms": rooms }));
    }
    (Value::Object(extensions), empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        assert_eq!(parse_pos(&encode_pos(1_700_000_000_000, 42)), Some((1_700_000_000_000, 42)));
        assert_eq!(parse_pos("nonsense"), None);
        assert_eq!(parse_pos("1_x"), None);
    }

    #[test]
    fn required_state_patterns() {
        let required: BTreeSet<(String, String)> =
            [("m.room.name".to_string(), "".to_string()), ("m.room.member".to_string(), "$ME".to_string())].into();
        assert!(state_wanted(&required, "@me:x", "m.room.name", ""));
        assert!(state_wanted(&required, "@me:x", "m.room.member", "@me:x"));
        assert!(!state_wanted(&required, "@me:x", "m.room.member", "@other:x"));
        let everything: BTreeSet<(String, String)> = [("*".to_string(), "*".to_string())].into();
        assert!(state_wanted(&everything, "@me:x", "m.room.topic", ""));
        let lazy: BTreeSet<(String, String)> = [("m.room.member".to_string(), "$LAZY".to_string())].into();
        assert!(!state_wanted(&lazy, "@me:x", "m.room.member", "@other:x"));
    }
}
