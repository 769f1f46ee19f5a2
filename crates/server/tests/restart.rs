//! A node keeps nothing of its own: a new node on the same NATS serves the same data, and two
//! nodes on one NATS (two DCs sharing a cluster) behave as one server.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn message_bodies(c: &Client, user: &User, room_id: &str) -> Vec<String> {
    let page = c.get(&format!("/rooms/{}/messages?dir=b&limit=100", enc(room_id)), &user.token).await.ok();
    let mut bodies: Vec<String> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_string())
        .collect();
    bodies.reverse();
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_serves_everything_the_old_one_wrote() {
    let nats = Nats::start().await;
    let first = Node::start(&nats, test_config()).await;
    let c = first.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat", "name": "Durable" })).await;
    c.join(&bob, &room_id).await.ok();
    let mut sent = Vec::new();
    for i in 0..5 {
        c.send_text(&alice, &room_id, &format!("before restart {i}")).await;
        sent.push(format!("before restart {i}"));
    }
    let retried_txn = txn();
    let retried = c.send_with_txn(&alice, &room_id, "retried", &retried_txn).await.ok()["event_id"].clone();
    sent.push("retried".into());
    let uid = enc(&alice.user_id);
    c.put(&format!("/profile/{uid}/displayname"), &alice.token, json!({ "displayname": "Alice" })).await.ok();
    c.put(&format!("/user/{uid}/account_data/com.example.keep"), &alice.token, json!({ "kept": true })).await.ok();
    let png = {
        let image = image::RgbImage::from_fn(20, 10, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 7]));
        let mut out = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(image).write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let uri = c.raw(Method::POST, "/_matrix/media/v3/upload", Some(&alice.token), "image/png", png.clone()).await.ok()["content_uri"]
        .as_str()
        .unwrap()
        .to_string();
    let since = c.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_string();
    let logged_out = c.login(&alice).await;
    c.post("/logout", &logged_out.token, json!({})).await.ok();

    // Stop the node entirely, then start a brand new one (new store connection, empty read model).
    first.stop().await;
    let second = Node::start(&nats, test_config()).await;
    let c = second.client();

    let who = c.get("/account/whoami", &alice.token).await.ok();
    assert_eq!(who["user_id"], alice.user_id.as_str());
    assert_eq!(who["device_id"], alice.device_id.as_str());
    c.get("/account/whoami", &logged_out.token).await.expect_err(401, "M_UNKNOWN_TOKEN");
    let rooms = c.get("/joined_rooms", &alice.token).await.ok();
    assert!(rooms["joined_rooms"].as_array().unwrap().iter().any(|r| r == room_id.as_str()));
    assert_eq!(message_bodies(&c, &bob, &room_id).await, sent);
    let name = c.get(&format!("/rooms/{}/state/m.room.name/", enc(&room_id)), &bob.token).await.ok();
    assert_eq!(name["name"], "Durable");
    assert_eq!(c.get(&format!("/profile/{uid}/displayname"), &bob.token).await.ok()["displayname"], "Alice");
    assert_eq!(c.get(&format!("/user/{uid}/account_data/com.example.keep"), &alice.token).await.ok(), json!({ "kept": true }));

    // The transaction id is remembered across the restart.
    let again = c.send_with_txn(&alice, &room_id, "retried", &retried_txn).await.ok();
    assert_eq!(again["event_id"], retried);
    assert_eq!(message_bodies(&c, &bob, &room_id).await, sent);

    // The media bytes.
    let (server_name, media_id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    let download = c
        .request(Method::GET, &format!("/_matrix/client/v1/media/download/{server_name}/{media_id}"), Some(&bob.token), None)
        .await;
    assert_eq!(download.status, 200);
    assert_eq!(download.raw, png);

    // The account can log in, and the old sync token still works.
    let fresh = c.login(&alice).await;
    c.get("/account/whoami", &fresh.token).await.ok();
    c.send_text(&alice, &room_id, "after restart").await;
    let (_, responses) = c
        .sync_until(&bob, Some(&since), Duration::from_secs(10), |s| {
            timeline(s, &room_id).iter().any(|e| e["content"]["body"] == "after restart")
        })
        .await;
    let seen: Vec<String> = responses
        .iter()
        .flat_map(|s| timeline(s, &room_id).into_iter().map(|e| e["content"]["body"].as_str().unwrap_or_default().to_string()))
        .filter(|b| !b.is_empty())
        .collect();
    assert_eq!(seen, vec!["after restart".to_string()], "events from before the token must not come again");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_nats_act_as_one_server() {
    let nats = Nats::start().await;
    let one = Node::start(&nats, test_config()).await;
    let two = Node::start(&nats, test_config()).await;
    let c1 = one.client();
    let c2 = two.client();
    let alice = c1.register("alice").await;
    let bob = c2.register("bob").await;

    // Accounts and tokens are shared.
    assert_eq!(c2.get("/account/whoami", &alice.token).await.ok()["user_id"], alice.user_id.as_str());
    assert_eq!(c1.get("/account/whoami", &bob.token).await.ok()["user_id"], bob.user_id.as_str());

    let room_id = c1.create_room(&alice, json!({ "preset": "public_chat" })).await;
    // Node two may not have applied the creation yet; a join is retried until it has.
    eventually(Duration::from_secs(10), "bob joins through node two", || {
        let c2 = c2.clone();
        let bob = bob.clone();
        let room_id = room_id.clone();
        async move { (c2.join(&bob, &room_id).await.status == 200).then_some(()) }
    })
    .await;

    // The same txnId through both nodes: one event.
    let txn_id = txn();
    let first = c1.send_with_txn(&alice, &room_id, "once only", &txn_id).await.ok();
    let retry = c2.send_with_txn(&alice, &room_id, "once only", &txn_id).await.ok();
    assert_eq!(first["event_id"], retry["event_id"], "a retry through another node must give the same event id");
    for c in [&c1, &c2] {
        let bodies = eventually(Duration::from_secs(10), "both nodes see the message", || {
            let c = c.clone();
            let bob = bob.clone();
            let room_id = room_id.clone();
            async move {
                let bodies = message_bodies(&c, &bob, &room_id).await;
                bodies.contains(&"once only".to_string()).then_some(bodies)
            }
        })
        .await;
        assert_eq!(bodies.iter().filter(|b| *b == "once only").count(), 1, "{bodies:?}");
    }

    // The same txnId sent through both nodes at the same moment (a client retrying after a
    // timeout against another DC): still one event.
    for round in 0..5 {
        let txn_id = txn();
        let text = format!("raced {round}");
        let (a, b) = tokio::join!(
            c1.send_with_txn(&alice, &room_id, &text, &txn_id),
            c2.send_with_txn(&alice, &room_id, &text, &txn_id),
        );
        let (a, b) = (a.ok(), b.ok());
        assert_eq!(a["event_id"], b["event_id"], "concurrent sends of one txnId must agree on the event id");
    }
    let bodies = eventually(Duration::from_secs(10), "node two has every raced message", || {
        let c2 = c2.clone();
        let bob = bob.clone();
        let room_id = room_id.clone();
        async move {
            let bodies = message_bodies(&c2, &bob, &room_id).await;
            bodies.contains(&"raced 4".to_string()).then_some(bodies)
        }
    })
    .await;
    for round in 0..5 {
        let text = format!("raced {round}");
        assert_eq!(bodies.iter().filter(|b| **b == text).count(), 1, "{text} stored more than once: {bodies:?}");
    }
    assert_eq!(message_bodies(&c1, &bob, &room_id).await, bodies, "both nodes hold the same history");

    // A long-poll on node two wakes for a message sent on node one.
    let since = c2.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_string();
    let since = c2.sync(&bob, Some(&since), 0).await["next_batch"].as_str().unwrap().to_string();
    let poller = {
        let c2 = c2.clone();
        let bob = bob.clone();
        let since = since.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (c2.sync(&bob, Some(&since), 20_000).await, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event_id = c1.send_text(&alice, &room_id, "across nodes").await;
    let (response, elapsed) = tokio::time::timeout(Duration::from_secs(15), poller).await.expect("long-poll returns").unwrap();
    assert!(elapsed < Duration::from_secs(10), "the long-poll on node two took {elapsed:?}");
    let got = ids(&timeline(&response, &room_id));
    assert!(got.contains(&event_id), "node two's long-poll should carry the event: {response}");

    // A sync token from node one works as `since` on node two (and back), without repeats.
    let token1 = c1.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_string();
    let later = c1.send_text(&alice, &room_id, "after token one").await;
    let (token2, seen) = c2
        .sync_until(&bob, Some(&token1), Duration::from_secs(10), |s| ids(&timeline(s, &room_id)).contains(&later))
        .await;
    let all: Vec<String> = seen.iter().flat_map(|s| ids(&timeline(s, &room_id))).collect();
    assert_eq!(all, vec![later.clone()], "only what came after node one's token");
    let third = c2.send_text(&bob, &room_id, "from node two").await;
    let (_, seen) = c1
        .sync_until(&alice, Some(&token2), Duration::from_secs(10), |s| ids(&timeline(s, &room_id)).contains(&third))
        .await;
    let all: Vec<String> = seen.iter().flat_map(|s| ids(&timeline(s, &room_id))).collect();
    assert!(!all.contains(&later), "node one must not repeat what node two's token covered: {all:?}");

    // Logging out on one node is honoured by the other.
    let extra = c1.login(&alice).await;
    c2.get("/account/whoami", &extra.token).await.ok(); // cached on node two
    c1.post("/logout", &extra.token, json!({})).await.ok();
    eventually(Duration::from_secs(10), "node two forgets the revoked token", || {
        let c2 = c2.clone();
        let token = extra.token.clone();
        async move { (c2.get("/account/whoami", &token).await.status == 401).then_some(()) }
    })
    .await;

    // Typing through node one reaches a sync on node two.
    let since = c2.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_string();
    c1.put(&format!("/rooms/{}/typing/{}", enc(&room_id), enc(&alice.user_id)), &alice.token, json!({ "typing": true, "timeout": 10000 }))
        .await
        .ok();
    c2.sync_until(&bob, Some(&since), Duration::from_secs(10), |s: &Value| {
        s["rooms"]["join"][&room_id]["ephemeral"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["type"] == "m.typing" && e["content"]["user_ids"].to_string().contains(&alice.user_id)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_two_nodes_converge() {
    let nats = Nats::start().await;
    let one = Node::start(&nats, test_config()).await;
    let two = Node::start(&nats, test_config()).await;
    let clients = [one.client(), two.client()];
    let alice = clients[0].register("alice").await;
    let room_id = clients[0].create_room(&alice, json!({ "preset": "public_chat" })).await;
    let mut users = Vec::new();
    for i in 0..6 {
        users.push(clients[i % 2].register("member").await);
    }
    // Everyone joins at once, half through each node.
    let joins = users.iter().enumerate().map(|(i, user)| {
        let c = clients[i % 2].clone();
        let user = user.clone();
        let room_id = room_id.clone();
        async move {
            eventually(Duration::from_secs(10), "join", || {
                let c = c.clone();
                let user = user.clone();
                let room_id = room_id.clone();
                async move { (c.join(&user, &room_id).await.status == 200).then_some(()) }
            })
            .await
        }
    });
    futures::future::join_all(joins).await;
    // State changes and messages race through both nodes.
    let topics = (0..8).map(|i| {
        let c = clients[i % 2].clone();
        let alice = alice.clone();
        let room_id = room_id.clone();
        async move {
            c.put(&format!("/rooms/{}/state/m.room.topic/", enc(&room_id)), &alice.token, json!({ "topic": format!("topic {i}") }))
                .await
                .ok()
        }
    });
    let sends = users.iter().enumerate().map(|(i, user)| {
        let c = clients[(i + 1) % 2].clone();
        let user = user.clone();
        let room_id = room_id.clone();
        async move { c.send_text(&user, &room_id, &format!("hello from {i}")).await }
    });
    let (_, _) = tokio::join!(futures::future::join_all(topics), futures::future::join_all(sends));

    // Both nodes converge on the same history and the same state.
    let history = |c: Client| {
        let alice = alice.clone();
        let room_id = room_id.clone();
        async move {
            let page = c.get(&format!("/rooms/{}/messages?dir=f&limit=200", enc(&room_id)), &alice.token).await.ok();
            page["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        }
    };
    let expected_len = 1 + 6 + 8 + 6; // at least: create .. plus joins, topics, messages
    // Every write above was acknowledged, but each node applies the other's writes on its own
    // schedule: wait until both hold everything, then compare.
    let (h1, h2) = eventually(Duration::from_secs(10), "both nodes have everything", || {
        let (f1, f2) = (history(clients[0].clone()), history(clients[1].clone()));
        async move {
            let (h1, h2) = tokio::join!(f1, f2);
            (h1.len() >= expected_len && h1.len() == h2.len()).then_some((h1, h2))
        }
    })
    .await;
    assert_eq!(h1, h2, "two nodes disagree on the room's history");
    let state = |c: &Client| {
        let c = c.clone();
        let token = alice.token.clone();
        let room_id = room_id.clone();
        async move {
            let mut events: Vec<String> = c.get(&format!("/rooms/{}/state", enc(&room_id)), &token).await.ok().as_array().unwrap()
                .iter().map(|e| e["event_id"].as_str().unwrap().to_string()).collect();
            events.sort();
            events
        }
    };
    assert_eq!(state(&clients[0]).await, state(&clients[1]).await, "two nodes disagree on the room's state");
    let members = clients[1].get(&format!("/rooms/{}/joined_members", enc(&room_id)), &alice.token).await.ok();
    assert_eq!(members["joined"].as_object().unwrap().len(), 7);
    // The topic is the one of the last topic event in the history.
    let page = clients[0].get(&format!("/rooms/{}/messages?dir=b&limit=200", enc(&room_id)), &alice.token).await.ok();
    let last_topic = page["chunk"].as_array().unwrap().iter().find(|e| e["type"] == "m.room.topic").unwrap()["content"]["topic"].clone();
    for c in &clients {
        let topic = c.get(&format!("/rooms/{}/state/m.room.topic/", enc(&room_id)), &alice.token).await.ok();
        assert_eq!(topic["topic"], last_topic);
    }
}
