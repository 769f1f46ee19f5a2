//! matrix-rust-sdk (the engine of Element X) against a haetae server, through simplified sliding
//! sync (MSC4186): `SyncService`, `RoomListService`, `Timeline` and the SDK's own end-to-end
//! encryption, as an app built on the SDK drives them.
//!
//!   haetae-rust-sdk-test basic BASE_URL
//!       register and log in two users, the room list in recency order, a timeline's send and
//!       echo, an invite accepted, encrypted messages both ways.
//!   haetae-rust-sdk-test failover NODE1_URL NODE2_URL NODE1_PID
//!       a client syncs at node 1 through a forwarder (what a load balancer in front of the DCs
//!       does); node 1 is SIGKILLed mid-sync and the forwarder sends the client to node 2, where
//!       it continues from its `pos`: every message sent before, during and after the kill
//!       appears exactly once, with no new connection and no gap.
//!
//! Each step prints one line with its time and has a deadline; nothing sleeps for a fixed time:
//! the steps wait on the SDK's streams. Exits non-zero with the failing step on failure.
//! `RUST_LOG` (e.g. `matrix_sdk=debug`) shows what the SDK does.

#![recursion_limit = "256"]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{Stream, StreamExt};
use matrix_sdk::ruma::api::client::account::register;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::api::client::uiaa::{AuthData, Dummy};
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId};
use matrix_sdk::sliding_sync::VersionBuilder;
use matrix_sdk::{Client, Room, RoomState};
use matrix_sdk_ui::eyeball_im::{Vector, VectorDiff};
use matrix_sdk_ui::room_list_service::RoomListItem;
use matrix_sdk_ui::sync_service::{self, SyncService};
use matrix_sdk_ui::timeline::{RoomExt, Timeline, TimelineItem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Deadline of a step that waits for the server and the SDK (sync round trips, key exchange).
const STEP_DEADLINE: Duration = Duration::from_secs(30);
const PASSWORD: &str = "rust-sdk-test-password";

#[tokio::main]
async fn main() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "off".to_string());
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).with_writer(std::io::stderr).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let started = Instant::now();
    let outcome = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["basic", base] => basic(base).await,
        ["failover", node1, node2, pid] => match pid.parse::<u32>() {
            Ok(pid) => failover(node1, node2, pid).await,
            Err(_) => Err(anyhow!("NODE1_PID must be a process id")),
        },
        _ => {
            eprintln!("usage: haetae-rust-sdk-test basic BASE_URL | failover NODE1_URL NODE2_URL NODE1_PID");
            std::process::exit(2);
        }
    };
    match outcome {
        Ok(()) => println!("PASS {} ({:.1} s)", args[0], started.elapsed().as_secs_f64()),
        Err(error) => {
            println!("FAIL {}: {error:#}", args[0]);
            std::process::exit(1);
        }
    }
}

/// Runs one step with a deadline and prints its outcome.
async fn step<T>(name: &str, deadline: Duration, work: impl Future<Output = Result<T>>) -> Result<T> {
    let started = Instant::now();
    match tokio::time::timeout(deadline, work).await {
        Ok(Ok(value)) => {
            println!("ok   {name} ({} ms)", started.elapsed().as_millis());
            Ok(value)
        }
        Ok(Err(error)) => Err(error.context(format!("step '{name}'"))),
        Err(_) => Err(anyhow!("step '{name}' did not finish within {} s", deadline.as_secs())),
    }
}

fn unique() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

async fn new_client(base: &str) -> Result<Client> {
    // As Element X does: accept the server only if `/versions` offers simplified sliding sync.
    Client::builder()
        .homeserver_url(base)
        .sliding_sync_version_builder(VersionBuilder::DiscoverNative)
        .build()
        .await
        .context("building the client (does /versions offer org.matrix.simplified_msc3575?)")
}

/// Registers `localpart` (user-interactive auth with `m.login.dummy`).
async fn register(base: &str, localpart: &str) -> Result<()> {
    let client = new_client(base).await?;
    let mut request = register::v3::Request::new();
    request.username = Some(localpart.to_string());
    request.password = Some(PASSWORD.to_string());
    request.inhibit_login = true;
    if let Err(error) = client.matrix_auth().register(request.clone()).await {
        let Some(info) = error.as_uiaa_response() else { return Err(error).context("register") };
        let session = info.session.clone();
        let mut dummy = Dummy::new();
        dummy.session = session;
        request.auth = Some(AuthData::Dummy(dummy));
        client.matrix_auth().register(request).await.context("register with m.login.dummy")?;
    }
    Ok(())
}

async fn login(base: &str, localpart: &str) -> Result<Client> {
    let client = new_client(base).await?;
    client.matrix_auth().login_username(localpart, PASSWORD).initial_device_display_name("rust-sdk test").send().await?;
    Ok(client)
}

async fn start_sync(client: &Client, offline_mode: bool) -> Result<SyncService> {
    let mut builder = SyncService::builder(client.clone());
    if offline_mode {
        builder = builder.with_offline_mode();
    }
    let service = builder.build().await?;
    service.start().await;
    Ok(service)
}

/// Fails if the sync service stopped with an error (checked while waiting on something else).
fn sync_failed(service: &SyncService) -> Result<()> {
    match service.state().get() {
        sync_service::State::Error(error) => Err(anyhow!("the sync service stopped: {error:#}")),
        sync_service::State::Terminated => Err(anyhow!("the sync service terminated")),
        _ => Ok(()),
    }
}

/// Applies a stream of diffs to `items` until `done` holds.
async fn wait_until<T: Clone, S>(items: &mut Vector<T>, stream: &mut S, done: impl Fn(&Vector<T>) -> bool) -> Result<()>
where
    S: Stream<Item = Vec<VectorDiff<T>>> + Unpin,
{
    while !done(items) {
        let diffs = stream.next().await.ok_or_else(|| anyhow!("the stream ended"))?;
        for diff in diffs {
            diff.apply(items);
        }
    }
    Ok(())
}

/// A room's timeline and its items as last seen.
struct WatchedTimeline {
    timeline: Timeline,
    items: Vector<Arc<TimelineItem>>,
    stream: Pin<Box<dyn Stream<Item = Vec<VectorDiff<Arc<TimelineItem>>>> + Send>>,
}

impl WatchedTimeline {
    async fn open(room: &Room) -> Result<Self> {
        let timeline = room.timeline().await?;
        let (items, stream) = timeline.subscribe().await;
        Ok(WatchedTimeline { timeline, items, stream: Box::pin(stream) })
    }

    /// Message bodies from the server (local echoes left out), oldest first; `None` for an
    /// encrypted event the SDK could not decrypt.
    fn remote_bodies(items: &Vector<Arc<TimelineItem>>) -> Vec<Option<String>> {
        items
            .iter()
            .filter_map(|item| item.as_event())
            .filter(|event| !event.is_local_echo())
            .filter_map(|event| {
                let content = event.content();
                if content.is_unable_to_decrypt() {
                    Some(None)
                } else {
                    content.as_message().map(|message| Some(message.body().to_string()))
                }
            })
            .collect()
    }

    async fn wait_for_bodies(&mut self, wanted: &[String]) -> Result<()> {
        let result = tokio::time::timeout(
            STEP_DEADLINE,
            wait_until(&mut self.items, &mut self.stream, |items| {
                let bodies = Self::remote_bodies(items);
                wanted.iter().all(|w| bodies.iter().any(|b| b.as_deref() == Some(w.as_str())))
            }),
        )
        .await;
        match result {
            Ok(outcome) => outcome,
            Err(_) => {
                let bodies = Self::remote_bodies(&self.items);
                let undecrypted = bodies.iter().filter(|b| b.is_none()).count();
                bail!(
                    "waited for {wanted:?}; the timeline shows {:?} and {undecrypted} event(s) it could not decrypt",
                    bodies.into_iter().flatten().collect::<Vec<_>>()
                )
            }
        }
    }

    async fn send(&self, body: &str) -> Result<()> {
        self.timeline.send(RoomMessageEventContent::text_plain(body).into()).await?;
        Ok(())
    }
}

/// Waits until `client` knows `room_id` in `state`, watching the room list of `service`.
async fn wait_for_room_state(service: &SyncService, room_id: &RoomId, state: RoomState) -> Result<Room> {
    let all_rooms = service.room_list_service().all_rooms().await?;
    let (stream, controller) = all_rooms.entries_with_dynamic_adapters(100);
    controller.set_filter(Box::new(|_: &RoomListItem| true));
    let mut stream = Box::pin(stream);
    let mut items: Vector<RoomListItem> = Vector::new();
    loop {
        let found = items.iter().find(|item| item.room_id() == room_id).map(|item| item.state());
        if found == Some(state) {
            return Ok(service.room_list_service().room(room_id)?);
        }
        sync_failed(service)?;
        // Room states change without a diff of the list (the entries are refreshed on
        // notable updates), so look again at the client's own view too.
        if let Some(room) = service.room_list_service().client().get_room(room_id)
            && room.state() == state
            && items.iter().any(|item| item.room_id() == room_id)
        {
            return Ok(room);
        }
        let Some(diffs) = stream.next().await else { bail!("the room list stream ended") };
        for diff in diffs {
            diff.apply(&mut items);
        }
    }
}

async fn create_room(client: &Client, name: &str, invite: &[OwnedUserId], encrypted: bool) -> Result<OwnedRoomId> {
    let mut request = create_room::v3::Request::new();
    request.name = Some(name.to_string());
    request.invite = invite.to_vec();
    if encrypted {
        request.initial_state =
            vec![InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults()).to_raw_any()];
    }
    Ok(client.create_room(request).await?.room_id().to_owned())
}

async fn basic(base: &str) -> Result<()> {
    let id = unique();
    let (alice_name, bob_name) = (format!("sdk_alice_{id}"), format!("sdk_bob_{id}"));
    step("register two users (m.login.dummy)", STEP_DEADLINE, async {
        register(base, &alice_name).await?;
        register(base, &bob_name).await
    })
    .await?;
    let (alice, bob) = step("log in both with a password; /versions offers simplified sliding sync", STEP_DEADLINE, async {
        let alice = login(base, &alice_name).await?;
        let bob = login(base, &bob_name).await?;
        if !matches!(alice.sliding_sync_version(), matrix_sdk::sliding_sync::Version::Native) {
            bail!("the SDK did not pick simplified sliding sync");
        }
        Ok((alice, bob))
    })
    .await?;
    let bob_id = bob.user_id().context("bob's user id")?.to_owned();

    // Three rooms, bumped in a known order: the room list shows the latest bumped first.
    let rooms = step("alice creates three rooms and sends to them in the order 2, 1, 3", STEP_DEADLINE, async {
        let mut rooms = Vec::new();
        for n in 1..=3 {
            rooms.push(create_room(&alice, &format!("rust-sdk room {n}"), &[], false).await?);
        }
        for n in [1, 0, 2] {
            let room = alice.get_room(&rooms[n]).context("created room unknown to the client")?;
            room.send(RoomMessageEventContent::text_plain(format!("bump {}", n + 1))).await?;
        }
        Ok(rooms)
    })
    .await?;
    let alice_sync = step("alice starts the SyncService (room list + encryption sync)", STEP_DEADLINE, start_sync(&alice, false)).await?;
    step("alice's room list fills in recency order (3, 1, 2)", STEP_DEADLINE, async {
        let all_rooms = alice_sync.room_list_service().all_rooms().await?;
        let (stream, controller) = all_rooms.entries_with_dynamic_adapters(50);
        controller.set_filter(Box::new(|_: &RoomListItem| true));
        let mut stream = Box::pin(stream);
        let mut items: Vector<RoomListItem> = Vector::new();
        let expected = vec![rooms[2].clone(), rooms[0].clone(), rooms[1].clone()];
        let result = tokio::time::timeout(
            STEP_DEADLINE - Duration::from_secs(1),
            wait_until(&mut items, &mut stream, |items| {
                items.iter().map(|item| item.room_id().to_owned()).collect::<Vec<_>>() == expected
            }),
        )
        .await;
        if result.is_err() {
            sync_failed(&alice_sync)?;
            let seen: Vec<String> = items.iter().map(|item| item.room_id().to_string()).collect();
            bail!("room list {seen:?}, expected {expected:?}");
        }
        result?
    })
    .await?;

    let mut alice_timeline = step("alice opens room 1's timeline, sends a message and sees its remote echo", STEP_DEADLINE, async {
        alice_sync.room_list_service().subscribe_to_rooms(&[&rooms[0]]).await;
        let room = alice_sync.room_list_service().room(&rooms[0])?;
        let mut timeline = WatchedTimeline::open(&room).await?;
        timeline.send("hello from alice").await?;
        timeline.wait_for_bodies(&["hello from alice".to_string()]).await?;
        Ok(timeline)
    })
    .await?;

    let bob_sync = step("bob starts his SyncService", STEP_DEADLINE, start_sync(&bob, false)).await?;
    step("alice invites bob to room 1; bob's room list shows the invite", STEP_DEADLINE, async {
        alice.get_room(&rooms[0]).context("room 1")?.invite_user_by_id(&bob_id).await?;
        wait_for_room_state(&bob_sync, &rooms[0], RoomState::Invited).await
    })
    .await?;
    step("bob accepts; his room list shows room 1 joined", STEP_DEADLINE, async {
        bob.join_room_by_id(&rooms[0]).await?;
        wait_for_room_state(&bob_sync, &rooms[0], RoomState::Joined).await
    })
    .await?;
    let mut bob_timeline = step("bob opens room 1's timeline and sees alice's message", STEP_DEADLINE, async {
        bob_sync.room_list_service().subscribe_to_rooms(&[&rooms[0]]).await;
        let room = bob_sync.room_list_service().room(&rooms[0])?;
        let mut timeline = WatchedTimeline::open(&room).await?;
        // The room list brought the room with its latest event only (the join); the history
        // before it comes back-paginated, as an app does when it opens a room.
        timeline.timeline.paginate_backwards(20).await?;
        timeline.wait_for_bodies(&["hello from alice".to_string()]).await?;
        Ok(timeline)
    })
    .await?;
    step("alice sends, bob receives live; bob answers, alice receives", STEP_DEADLINE * 2, async {
        alice_timeline.send("welcome bob").await?;
        bob_timeline.wait_for_bodies(&["welcome bob".to_string()]).await?;
        bob_timeline.send("hi alice").await?;
        alice_timeline.wait_for_bodies(&["hi alice".to_string()]).await
    })
    .await?;

    let secret_room = step("alice creates an encrypted room (m.room.encryption) and invites bob; bob joins", STEP_DEADLINE, async {
        let room_id = create_room(&alice, "rust-sdk secrets", std::slice::from_ref(&bob_id), true).await?;
        wait_for_room_state(&bob_sync, &room_id, RoomState::Invited).await?;
        bob.join_room_by_id(&room_id).await?;
        wait_for_room_state(&bob_sync, &room_id, RoomState::Joined).await?;
        Ok(room_id)
    })
    .await?;
    step("end-to-end encrypted messages both ways, decrypted by the SDK's crypto", STEP_DEADLINE * 2, async {
        alice_sync.room_list_service().subscribe_to_rooms(&[&secret_room]).await;
        bob_sync.room_list_service().subscribe_to_rooms(&[&secret_room]).await;
        let alice_room = alice_sync.room_list_service().room(&secret_room)?;
        let bob_room = bob_sync.room_list_service().room(&secret_room)?;
        // haetae writes a new room's state one event at a time, so a sync can show the room
        // before its m.room.encryption; wait until both SDKs have seen it.
        for room in [&alice_room, &bob_room] {
            let mut info = room.subscribe_info();
            while !room.encryption_state().is_encrypted() {
                info.next().await.context("room info stream ended")?;
            }
        }
        let mut alice_secret = WatchedTimeline::open(&alice_room).await?;
        let mut bob_secret = WatchedTimeline::open(&bob_room).await?;
        alice_secret.send("secret from alice").await?;
        bob_secret.wait_for_bodies(&["secret from alice".to_string()]).await?;
        bob_secret.send("secret from bob").await?;
        alice_secret.wait_for_bodies(&["secret from bob".to_string()]).await?;
        let both = ["secret from alice".to_string(), "secret from bob".to_string()];
        for (who, timeline) in [("alice", &mut alice_secret), ("bob", &mut bob_secret)] {
            // Each side's own message too, as the server echoed it back.
            timeline.wait_for_bodies(&both).await?;
            let decrypted = timeline
                .items
                .iter()
                .filter_map(|item| item.as_event())
                .filter(|event| !event.is_local_echo() && event.encryption_info().is_some())
                .filter(|event| event.content().as_message().is_some_and(|m| m.body().starts_with("secret from")))
                .count();
            if decrypted != 2 {
                let seen: Vec<String> = timeline
                    .items
                    .iter()
                    .filter_map(|item| item.as_event())
                    .map(|e| {
                        let body = e.content().as_message().map(|m| m.body().to_string()).unwrap_or_default();
                        format!("{body:?} {:?} local={} encrypted={}", e.event_id(), e.is_local_echo(), e.encryption_info().is_some())
                    })
                    .collect();
                bail!("{who}'s timeline shows {decrypted} message(s) that came encrypted, expected both: {seen:#?}");
            }
        }
        Ok(())
    })
    .await?;
    sync_failed(&alice_sync)?;
    sync_failed(&bob_sync)?;
    alice_sync.stop().await;
    bob_sync.stop().await;
    Ok(())
}

/// A TCP forwarder: what a load balancer in front of the DCs does. Each connection goes to the
/// current target. It also reads the plain HTTP passing through, to tell how the client carried
/// on after a switch: the sliding sync requests it made (with a `pos` or not) and whether a
/// response said `M_UNKNOWN_POS` or brought a `limited` timeline (a gap).
struct Forwarder {
    address: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    switched: Arc<AtomicBool>,
    /// Sliding sync requests since the switch, and those of them without a `pos`.
    syncs_after: Arc<AtomicUsize>,
    syncs_without_pos_after: Arc<AtomicUsize>,
    /// Responses since the switch saying `M_UNKNOWN_POS`, and timelines marked `limited`.
    unknown_pos_after: Arc<AtomicUsize>,
    limited_after: Arc<AtomicUsize>,
}

impl Forwarder {
    async fn start(target: SocketAddr) -> Result<Forwarder> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let forwarder = Forwarder {
            address: listener.local_addr()?,
            target: Arc::new(Mutex::new(target)),
            switched: Arc::default(),
            syncs_after: Arc::default(),
            syncs_without_pos_after: Arc::default(),
            unknown_pos_after: Arc::default(),
            limited_after: Arc::default(),
        };
        let (target, switched) = (forwarder.target.clone(), forwarder.switched.clone());
        let counters = (
            forwarder.syncs_after.clone(),
            forwarder.syncs_without_pos_after.clone(),
            forwarder.unknown_pos_after.clone(),
            forwarder.limited_after.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let to = *target.lock().expect("forwarder target");
                let switched = switched.clone();
                let counters = counters.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(to).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let (syncs, without_pos, unknown_pos, limited) = counters;
                    let sw = switched.clone();
                    let up = pump(client_read, server_write, move |chunk| {
                        if !sw.load(Ordering::SeqCst) {
                            return;
                        }
                        let text = String::from_utf8_lossy(chunk);
                        for line in text.lines().filter(|l| l.starts_with("POST ") && l.contains("simplified_msc3575/sync")) {
                            syncs.fetch_add(1, Ordering::SeqCst);
                            if !line.contains("pos=") {
                                without_pos.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    });
                    let down = pump(server_read, client_write, move |chunk| {
                        if !switched.load(Ordering::SeqCst) {
                            return;
                        }
                        let text = String::from_utf8_lossy(chunk);
                        unknown_pos.fetch_add(text.matches("M_UNKNOWN_POS").count(), Ordering::SeqCst);
                        limited.fetch_add(text.matches("\"limited\":true").count(), Ordering::SeqCst);
                    });
                    tokio::join!(up, down);
                });
            }
        });
        Ok(forwarder)
    }

    fn switch_to(&self, target: SocketAddr) {
        *self.target.lock().expect("forwarder target") = target;
        self.switched.store(true, Ordering::SeqCst);
    }
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, watch: impl Fn(&[u8])) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                watch(&buffer[..n]);
                if to.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

fn socket_of(url: &str) -> Result<SocketAddr> {
    let rest = url.strip_prefix("http://").with_context(|| format!("{url}: only http:// node URLs"))?;
    let host_port = rest.trim_end_matches('/');
    host_port.parse().with_context(|| format!("{url}: expected http://IP:PORT"))
}

async fn failover(node1: &str, node2: &str, node1_pid: u32) -> Result<()> {
    let forwarder = Forwarder::start(socket_of(node1)?).await?;
    let front = format!("http://{}", forwarder.address);
    println!("     forwarder {front} -> node 1 {node1}");
    let id = unique();
    let (alice_name, bob_name) = (format!("fo_alice_{id}"), format!("fo_bob_{id}"));
    let (alice, bob) = step("register and log in alice (through the forwarder) and bob (at node 2)", STEP_DEADLINE, async {
        register(&front, &alice_name).await?;
        register(node2, &bob_name).await?;
        Ok((login(&front, &alice_name).await?, login(node2, &bob_name).await?))
    })
    .await?;
    let alice_id = alice.user_id().context("alice's user id")?.to_owned();
    let (room_id, bob_room) = step("bob creates a room and invites alice; alice joins", STEP_DEADLINE, async {
        let room_id = create_room(&bob, "failover", std::slice::from_ref(&alice_id), false).await?;
        alice.join_room_by_id(&room_id).await?;
        let bob_room = bob.get_room(&room_id).context("bob's room")?;
        Ok((room_id, bob_room))
    })
    .await?;
    let sync = step("alice starts the SyncService (offline mode, as apps do) at node 1", STEP_DEADLINE, start_sync(&alice, true)).await?;
    let mut timeline = step("alice opens the room's timeline", STEP_DEADLINE, async {
        wait_for_room_state(&sync, &room_id, RoomState::Joined).await?;
        sync.room_list_service().subscribe_to_rooms(&[&room_id]).await;
        WatchedTimeline::open(&sync.room_list_service().room(&room_id)?).await
    })
    .await?;
    let messages: Vec<String> = (1..=9).map(|n| format!("failover message {n}")).collect();
    step("bob sends messages 1-3; alice's timeline shows them (synced at node 1)", STEP_DEADLINE, async {
        for body in &messages[0..3] {
            bob_room.send(RoomMessageEventContent::text_plain(body)).await?;
        }
        timeline.wait_for_bodies(&messages[0..3]).await
    })
    .await?;
    step("node 1 is SIGKILLed while alice long-polls; the forwarder now leads to node 2", STEP_DEADLINE, async {
        let status = std::process::Command::new("kill").args(["-KILL", &node1_pid.to_string()]).status()?;
        if !status.success() {
            bail!("kill -KILL {node1_pid} failed");
        }
        forwarder.switch_to(socket_of(node2)?);
        Ok(())
    })
    .await?;
    step("bob sends messages 4-6 during the outage", STEP_DEADLINE, async {
        for body in &messages[3..6] {
            bob_room.send(RoomMessageEventContent::text_plain(body)).await?;
        }
        Ok(())
    })
    .await?;
    step("alice's client carries on at node 2 and shows messages 4-6", STEP_DEADLINE * 2, timeline.wait_for_bodies(&messages[0..6])).await?;
    step("bob sends messages 7-9 after; alice shows them", STEP_DEADLINE, async {
        for body in &messages[6..9] {
            bob_room.send(RoomMessageEventContent::text_plain(body)).await?;
        }
        timeline.wait_for_bodies(&messages).await
    })
    .await?;
    step("every message exactly once, in order; node 2 continued the connection (pos kept, no gap)", STEP_DEADLINE, async {
        let bodies: Vec<String> = WatchedTimeline::remote_bodies(&timeline.items).into_iter().flatten().collect();
        let ours: Vec<&String> = bodies.iter().filter(|b| b.starts_with("failover message")).collect();
        if ours != messages.iter().collect::<Vec<_>>() {
            bail!("timeline shows {ours:?}");
        }
        let syncs = forwarder.syncs_after.load(Ordering::SeqCst);
        let without_pos = forwarder.syncs_without_pos_after.load(Ordering::SeqCst);
        let unknown_pos = forwarder.unknown_pos_after.load(Ordering::SeqCst);
        let limited = forwarder.limited_after.load(Ordering::SeqCst);
        println!(
            "     after the kill: {syncs} sliding sync requests at node 2, {without_pos} without a pos, {unknown_pos} M_UNKNOWN_POS, {limited} limited timelines"
        );
        if syncs == 0 {
            bail!("no sliding sync request reached node 2");
        }
        if without_pos > 0 || unknown_pos > 0 {
            bail!("the client started a new connection at node 2 (a full resync)");
        }
        if limited > 0 {
            bail!("node 2 sent a limited timeline (a gap) after the switch");
        }
        Ok(())
    })
    .await?;
    sync_failed(&sync)?;
    sync.stop().await;
    Ok(())
}
