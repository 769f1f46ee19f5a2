use serde_json::{Value, json};

use super::*;

fn event_entry(event: Value) -> Vec<u8> {
    Envelope::new(Entry::Event { event, txn: None, prev_content: None, redacts_target: None }).to_bytes().to_vec()
}

fn ev(event_type: &str, sender: &str, state_key: Option<&str>, content: Value) -> Value {
    let mut event = json!({"type": event_type, "sender": sender, "room_id": "!r:x", "content": content, "origin_server_ts": 1});
    if let Some(key) = state_key {
        event["state_key"] = json!(key);
    }
    event
}

/// Applies `event` at the partition's next position; returns its id.
fn put(model: &ReadModel, event: Value) -> String {
    let p = model.partition_of("!r:x");
    let seq = model.applied(p) + 1;
    model.apply(p, seq, "!r:x", &event_entry(event));
    event_id_at(p, seq)
}

fn created_room(model: &ReadModel) {
    put(model, ev("m.room.create", "@a:x", Some(""), json!({"room_version": "11"})));
    put(model, ev("m.room.member", "@a:x", Some("@a:x"), json!({"membership": "join"})));
}

fn timeline_ids(model: &ReadModel) -> Vec<String> {
    model.with_room("!r:x", |room| room.window_between(0, u64::MAX).map(|i| i.event_id.to_string()).collect()).unwrap()
}

#[test]
fn applies_events_in_order_with_ids_from_positions() {
    let model = ReadModel::new(4);
    created_room(&model);
    let id = put(&model, ev("m.room.message", "@a:x", None, json!({"body": "hi"})));
    let ids = timeline_ids(&model);
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[2], id);
    assert_eq!(position_of(&id), Some((model.partition_of("!r:x"), 3)));
    assert_eq!(model.membership("!r:x", "@a:x"), Some(Membership::Join));
    assert!(model.with_user("@a:x", |u| u.rooms.get("!r:x") == Some(&Membership::Join)));
}

#[test]
fn a_retried_transaction_is_applied_once() {
    let model = ReadModel::new(4);
    created_room(&model);
    let p = model.partition_of("!r:x");
    let txn = Txn { device_id: "D".into(), txn_id: "t1".into(), key: "k1".into() };
    let entry = Envelope::new(Entry::Event {
        event: ev("m.room.message", "@a:x", None, json!({"body": "once"})),
        txn: Some(txn),
        prev_content: None,
        redacts_target: None,
    })
    .to_bytes();
    model.apply(p, 3, "!r:x", &entry);
    model.apply(p, 4, "!r:x", &entry);
    assert_eq!(timeline_ids(&model).len(), 3);
    assert_eq!(model.transaction_event("k1").map(|(_, id)| id), Some(event_id_at(p, 3)));
    assert!(model.with_room("!r:x", |room| room.is_skipped(4)).unwrap());
}

#[test]
fn rejects_what_the_authorization_rules_forbid() {
    let model = ReadModel::new(4);
    created_room(&model);
    let id = put(&model, ev("m.room.message", "@mallory:x", None, json!({"body": "hi"})));
    assert_eq!(timeline_ids(&model).len(), 2);
    assert!(model.rejection(&id).is_some());
}

#[test]
fn redaction_strips_the_target() {
    let model = ReadModel::new(4);
    created_room(&model);
    let target = put(&model, ev("m.room.message", "@a:x", None, json!({"body": "secret"})));
    let mut redaction = ev("m.room.redaction", "@a:x", None, json!({"redacts": target}));
    redaction["redacts"] = json!(target);
    put(&model, redaction);
    let (_, seq) = position_of(&target).unwrap();
    let shown = model.with_room("!r:x", |room| room.shown(room.window_at(seq).unwrap())).unwrap();
    assert!(shown.event["content"].get("body").is_none());
    assert!(shown.redacted_because.is_some());
}

#[test]
fn visibility_follows_each_members_own_history() {
    let model = ReadModel::new(4);
    created_room(&model);
    put(&model, ev("m.room.history_visibility", "@a:x", Some(""), json!({"history_visibility": "joined"})));
    put(&model, ev("m.room.join_rules", "@a:x", Some(""), json!({"join_rule": "public"})));
    for i in 0..50 {
        put(&model, ev("m.room.message", "@a:x", None, json!({"body": i})));
    }
    let join = put(&model, ev("m.room.member", "@b:x", Some("@b:x"), json!({"membership": "join"})));
    let (_, join_seq) = position_of(&join).unwrap();
    model.with_room("!r:x", |room| {
        assert_eq!(room.visible_from("@b:x"), join_seq);
        assert_eq!(room.visible_from("@nobody:x"), u64::MAX);
        assert_eq!(room.membership_seq("@b:x"), Some(join_seq));
    });
}

#[test]
fn receipts_keep_the_latest_per_user_type_and_thread() {
    let model = ReadModel::new(4);
    created_room(&model);
    let p = model.partition_of("!r:x");
    for i in 0..5u64 {
        let seq = model.applied(p) + 1;
        let receipt = Entry::Receipt { user_id: "@a:x".into(), receipt_type: "m.read".into(), event_id: format!("$e{i}"), ts: i, thread_id: None };
        model.apply(p, seq, "!r:x", &Envelope::new(receipt).to_bytes());
    }
    let receipts = model.with_room("!r:x", |room| room.receipts_between(0, u64::MAX).into_iter().map(|r| r.event_id.clone()).collect::<Vec<_>>()).unwrap();
    assert_eq!(receipts, vec!["$e4".to_string()]);
}

#[test]
fn windows_shrink_under_the_budget_and_keep_counting() {
    let model = ReadModel::with_budget(1, CacheBudget { window_bytes: 64 * 1024, chunk_bytes: 64 * 1024, room_bytes: 64 * 1024 * 1024 });
    created_room(&model);
    for i in 0..2000 {
        put(&model, ev("m.room.message", "@a:x", None, json!({"body": format!("message {i}")})));
    }
    model.enforce_budget();
    let (window_bytes, ..) = model.cache_stats();
    assert!(window_bytes <= 64 * 1024, "{window_bytes}");
    let chunks = 2002usize.div_ceil(room::CHUNK_EVENTS as usize);
    model.with_room("!r:x", |room| {
        assert!(room.chunk_ref(chunks - 1).is_some() && room.chunk_ref(chunks).is_none());
        let last = room.chunk_ref(chunks - 1).unwrap();
        assert_eq!(last.events, 2002 - (chunks as u64 - 1) * room::CHUNK_EVENTS);
        assert_eq!(last.to, room.last_event_seq());
        assert_eq!(room.chunk_of(last.from), Some(chunks - 1));
        assert!(room.evicted_upto() > 0);
    });
}

#[test]
fn snapshots_round_trip_and_refuse_damage() {
    let model = ReadModel::new(2);
    created_room(&model);
    put(&model, ev("m.room.message", "@a:x", None, json!({"body": "before"})));
    let (info, bytes) = model.snapshot();
    let restored = ReadModel::new(2);
    restored.load_snapshot(&info, &bytes).unwrap();
    assert_eq!(restored.positions(), model.positions());
    assert_eq!(restored.membership("!r:x", "@a:x"), Some(Membership::Join));
    assert!(restored.with_user("@a:x", |u| u.rooms.contains_key("!r:x")));
    let (events, evicted, last) = restored.with_room("!r:x", |room| (room.chunk_ref(0).unwrap().events, room.evicted_upto(), room.last_event_seq())).unwrap();
    assert_eq!(events, 3);
    assert_eq!(evicted, last);
    // Applying continues after the snapshot's positions.
    put(&restored, ev("m.room.message", "@a:x", None, json!({"body": "after"})));
    assert_eq!(restored.with_room("!r:x", |room| room.chunk_ref(0).unwrap().events), Some(4));

    let mut damaged = bytes.clone();
    damaged[10] ^= 1;
    assert!(matches!(ReadModel::new(2).load_snapshot(&info, &damaged), Err(snapshot::SnapshotLoadError::Checksum)));
    assert!(matches!(ReadModel::new(3).load_snapshot(&info, &bytes), Err(snapshot::SnapshotLoadError::Partitions { .. })));
    let old = snapshot::SnapshotInfo { format: 0, ..info.clone() };
    assert!(matches!(ReadModel::new(2).load_snapshot(&old, &bytes), Err(snapshot::SnapshotLoadError::Format { .. })));
}

#[test]
fn unreadable_entries_are_skipped_but_advance_the_position() {
    let model = ReadModel::new(1);
    model.apply(0, 7, "!r:x", b"not json");
    assert_eq!(model.applied(0), 7);
}

#[test]
fn relations_tags_and_directory_visibility_are_applied_and_kept_in_snapshots() {
    let model = ReadModel::new(2);
    created_room(&model);
    let root = put(&model, ev("m.room.message", "@a:x", None, json!({"body": "root"})));
    let reply = json!({"body": "r", "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    put(&model, ev("m.room.message", "@a:x", None, reply));
    // A rich reply is not a relation; neither is one naming an unknown event.
    put(&model, ev("m.room.message", "@a:x", None, json!({"body": "q", "m.relates_to": {"m.in_reply_to": {"event_id": root}}})));
    put(&model, ev("m.room.message", "@a:x", None, json!({"body": "x", "m.relates_to": {"rel_type": "m.thread", "event_id": "$nope"}})));
    let p = model.partition_of("!r:x");
    let next = |model: &ReadModel| model.applied(p) + 1;
    let visibility = Envelope::new(Entry::DirectoryVisibility { visibility: "public".into() }).to_bytes();
    let visibility_seq = next(&model);
    model.apply(p, visibility_seq, "!r:x", &visibility);
    let user_p = model.partition_of("@a:x");
    for (tag, content) in [("m.favourite", Some(json!({"order": 0.5}))), ("u.x", Some(json!({}))), ("u.x", None)] {
        let entry = Envelope::new(Entry::RoomTag { room_id: "!r:x".into(), tag: tag.into(), content }).to_bytes();
        model.apply(user_p, model.applied(user_p) + 1, "@a:x", &entry);
    }
    let root_seq = position_of(&root).unwrap().1;
    let check = |model: &ReadModel| {
        let (children, threads, published, last_seq) = model
            .with_room("!r:x", |room| {
                let children: Vec<String> = room.relations.children(root_seq).iter().map(|r| r.rel_type.to_string()).collect();
                (children, room.relations.stats().1, room.published, room.last_seq)
            })
            .unwrap();
        assert_eq!(children, ["m.thread"]);
        assert_eq!(threads, 1);
        assert!(published);
        assert_eq!(last_seq, visibility_seq, "a visibility entry moves the room's last sequence");
        let tags = model.with_user("@a:x", |u| u.room_account_data["!r:x"]["m.tag"].1.clone());
        assert_eq!(tags, json!({"tags": {"m.favourite": {"order": 0.5}}}));
    };
    check(&model);
    let (info, bytes) = model.snapshot();
    assert_eq!(info.format, snapshot::SNAPSHOT_FORMAT);
    let restored = ReadModel::new(2);
    restored.load_snapshot(&info, &bytes).unwrap();
    check(&restored);
}

/// Events of room `room` (its own id in place of `!r:x`).
fn in_room(room: &str, mut event: Value) -> Value {
    event["room_id"] = json!(room);
    event
}

fn put_in(model: &ReadModel, room: &str, event: Value) -> String {
    let p = model.partition_of(room);
    let seq = model.applied(p) + 1;
    model.apply(p, seq, room, &event_entry(in_room(room, event)));
    event_id_at(p, seq)
}

fn room_name(room: &Room) -> Option<String> {
    room.state.content("m.room.name", "").and_then(|c| c["name"].as_str().map(str::to_string))
}

#[test]
fn cold_rooms_leave_memory_and_come_back_unchanged() {
    // Room state gets a budget for about a dozen small rooms; 200 rooms are made.
    let budget = CacheBudget { window_bytes: 1024 * 1024, chunk_bytes: 1024 * 1024, room_bytes: 64 * 1024 };
    let model = ReadModel::with_budget(2, budget);
    let rooms: Vec<String> = (0..200).map(|i| format!("!room{i}:x")).collect();
    for (i, room) in rooms.iter().enumerate() {
        put_in(&model, room, ev("m.room.create", "@a:x", Some(""), json!({"room_version": "11"})));
        put_in(&model, room, ev("m.room.member", "@a:x", Some("@a:x"), json!({"membership": "join"})));
        let rule = if i % 10 == 0 { "public" } else { "invite" };
        put_in(&model, room, ev("m.room.join_rules", "@a:x", Some(""), json!({"join_rule": rule})));
        put_in(&model, room, ev("m.room.name", "@a:x", Some(""), json!({"name": format!("room {i}")})));
        put_in(&model, room, ev("m.room.message", "@a:x", None, json!({"body": format!("hello {i}")})));
    }
    assert!(model.over_budget());
    model.enforce_budget();
    let (hot, cold, spill_bytes, live) = model.room_counts();
    assert_eq!(hot + cold, 200);
    assert!(cold > 150 && spill_bytes > 0 && live == spill_bytes, "hot {hot} cold {cold} spill {spill_bytes}/{live}");
    assert!(!model.over_budget());
    // Every room is still known and answers as before; reading one brings it back.
    for (i, room) in rooms.iter().enumerate() {
        assert!(model.knows_room(room));
        let (name, count, evicted, last) =
            model.with_room(room, |r| (room_name(r), r.chunk_ref(0).map(|c| c.events), r.evicted_upto(), r.last_event_seq())).unwrap();
        assert_eq!(name, Some(format!("room {i}")));
        assert_eq!(count, Some(5));
        assert!(evicted <= last);
        assert_eq!(model.membership(room, "@a:x"), Some(Membership::Join));
    }
    // Scans see cold rooms: all of them, or the listed ones (public here) and every hot one.
    model.enforce_budget();
    let mut all = 0;
    model.visit_rooms(|_| {
        all += 1;
        true
    });
    assert_eq!(all, 200);
    let mut public = 0;
    model.visit_listed_rooms(|room| {
        public += usize::from(room.state.join_rule() == "public");
        true
    });
    assert_eq!(public, 20);
    // A cold room takes new events (it comes back first), and snapshots hold cold rooms.
    let cold_room = &rooms[1];
    put_in(&model, cold_room, ev("m.room.message", "@a:x", None, json!({"body": "again"})));
    assert_eq!(model.with_room(cold_room, |r| r.chunk_ref(0).map(|c| c.events)), Some(Some(6)));
    model.enforce_budget();
    let (info, bytes) = model.snapshot();
    let restored = ReadModel::new(2);
    restored.load_snapshot(&info, &bytes).unwrap();
    assert_eq!(restored.room_counts().0, 200);
    assert_eq!(restored.with_room(cold_room, |r| r.chunk_ref(0).map(|c| c.events)), Some(Some(6)));
    assert_eq!(restored.with_room(&rooms[7], room_name), Some(Some("room 7".to_string())));

    // Loaded under the small budget, the rooms past it go straight to the spill file: the load
    // never holds them all. Every room, member and public listing is there all the same, and a
    // snapshot of that model (mostly cold rooms) loads again.
    let small = ReadModel::with_budget(2, budget);
    small.load_snapshot(&info, &bytes).unwrap();
    let (hot, cold, _, _) = small.room_counts();
    assert_eq!(hot + cold, 200);
    assert!(cold > 150, "hot {hot} cold {cold}");
    assert!(!small.over_budget());
    assert!(small.with_user("@a:x", |u| u.rooms.len()) == 200);
    let mut public = 0;
    small.visit_listed_rooms(|room| {
        public += usize::from(room.state.join_rule() == "public");
        true
    });
    assert_eq!(public, 20);
    let (again, again_bytes) = small.snapshot();
    assert_eq!(again.positions, info.positions);
    let third = ReadModel::with_budget(2, budget);
    third.load_snapshot(&again, &again_bytes).unwrap();
    for (i, room) in rooms.iter().enumerate() {
        assert_eq!(third.with_room(room, room_name), Some(Some(format!("room {i}"))));
        assert_eq!(third.membership(room, "@a:x"), Some(Membership::Join));
    }
    assert_eq!(third.with_room(cold_room, |r| r.chunk_ref(0).map(|c| c.events)), Some(Some(6)));
    // A snapshot cut short is refused whole, and the model stays empty.
    let cut = &again_bytes[..again_bytes.len() / 2];
    let empty = ReadModel::with_budget(2, budget);
    assert!(empty.load_snapshot(&again, cut).is_err());
    assert_eq!(empty.room_counts().0 + empty.room_counts().1, 0);
    assert_eq!(empty.positions(), vec![0, 0]);
}

#[test]
fn a_block_refuses_joins_outlives_a_purge_and_is_kept_in_snapshots() {
    let model = ReadModel::new(2);
    created_room(&model);
    put(&model, ev("m.room.join_rules", "@a:x", Some(""), json!({"join_rule": "public"})));
    let p = model.partition_of("!r:x");
    let apply = |model: &ReadModel, entry: Entry| model.apply(p, model.applied(p) + 1, "!r:x", &Envelope::new(entry).to_bytes());
    apply(&model, Entry::RoomBlocked { blocked: true, by: "@admin:x".into() });
    assert_eq!(model.blocked_by("!r:x").as_deref(), Some("@admin:x"));
    assert_eq!(model.with_room("!r:x", |room| room.last_seq), Some(model.applied(p)), "a block moves the room's last sequence");
    let join = put(&model, ev("m.room.member", "@b:x", Some("@b:x"), json!({"membership": "join"})));
    assert_eq!(model.rejection(&join).as_deref(), Some(BLOCKED_ROOM));
    assert_eq!(model.membership("!r:x", "@b:x"), None);
    // Other rooms and the room's own members are untouched until the purge.
    assert!(model.with_user("@a:x", |u| u.rooms.contains_key("!r:x")));

    apply(&model, Entry::RoomPurged { by: "@admin:x".into() });
    assert!(!model.knows_room("!r:x"));
    assert!(model.with_user("@a:x", |u| u.rooms.is_empty()));
    assert_eq!(model.blocked_by("!r:x").as_deref(), Some("@admin:x"), "the block outlives the purge");
    // A late entry of the purged room finds no room.
    let late = put(&model, ev("m.room.message", "@a:x", None, json!({"body": "late"})));
    assert!(model.rejection(&late).is_some());
    assert!(!model.knows_room("!r:x"));

    let (info, bytes) = model.snapshot();
    let restored = ReadModel::new(2);
    restored.load_snapshot(&info, &bytes).unwrap();
    assert!(!restored.knows_room("!r:x"));
    assert_eq!(restored.blocked_by("!r:x").as_deref(), Some("@admin:x"));
    apply(&restored, Entry::RoomBlocked { blocked: false, by: "@admin:x".into() });
    assert_eq!(restored.blocked_by("!r:x"), None);
}

#[test]
fn bump_stamps_follow_message_like_events_and_survive_snapshots() {
    let model = ReadModel::new(2);
    created_room(&model);
    let room = vec!["!r:x".to_string(), "!unknown:x".to_string()];
    assert_eq!(model.bump_stamps(&room), vec![1, 0], "the create event bumps; an unknown room has no stamp");
    let mut message = ev("m.room.message", "@a:x", None, json!({"body": "hi"}));
    message["origin_server_ts"] = json!(50);
    put(&model, message);
    let mut topic = ev("m.room.topic", "@a:x", Some(""), json!({"topic": "state does not bump"}));
    topic["origin_server_ts"] = json!(90);
    put(&model, topic);
    assert_eq!(model.bump_stamps(&room), vec![50, 0]);
    let (info, bytes) = model.snapshot();
    let restored = ReadModel::new(2);
    restored.load_snapshot(&info, &bytes).unwrap();
    assert_eq!(restored.bump_stamps(&room), vec![50, 0]);
}
