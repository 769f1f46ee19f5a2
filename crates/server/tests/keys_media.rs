//! End-to-end encryption support (device keys, one-time keys, to-device messages, cross-signing)
//! and media (upload, download, thumbnails, limits).

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn device_keys(user: &User, tag: &str) -> Value {
    json!({
        "user_id": user.user_id,
        "device_id": user.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", user.device_id): format!("curve-{tag}"),
            format!("ed25519:{}", user.device_id): format!("ed-{tag}"),
        },
        "signatures": { user.user_id.clone(): { format!("ed25519:{}", user.device_id): format!("sig-{tag}") } },
    })
}

fn one_time_keys(user: &User, ids: &[&str]) -> Value {
    let mut keys = serde_json::Map::new();
    for id in ids {
        keys.insert(
            format!("signed_curve25519:{id}"),
            json!({ "key": format!("otk-{id}"), "signatures": { user.user_id.clone(): { format!("ed25519:{}", user.device_id): "s" } } }),
        );
    }
    Value::Object(keys)
}

async fn claim_one(c: &Client, claimer: &User, owner: &User) -> Option<(String, Value)> {
    let response = c
        .post(
            "/keys/claim",
            &claimer.token,
            json!({ "one_time_keys": { owner.user_id.clone(): { owner.device_id.clone(): "signed_curve25519" } } }),
        )
        .await
        .ok();
    let keys = response["one_time_keys"][&owner.user_id][&owner.device_id].as_object()?;
    assert_eq!(keys.len(), 1, "one key per claim: {response}");
    keys.iter().next().map(|(k, v)| (k.clone(), v.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_keys_one_time_keys_and_counts() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let alice2 = c.login(&alice).await;
    let bob = c.register("bob").await;

    // Two devices upload their keys.
    let uploaded = c
        .post(
            "/keys/upload",
            &alice.token,
            json!({ "device_keys": device_keys(&alice, "a1"), "one_time_keys": one_time_keys(&alice, &["AAAA", "AAAB", "AAAC"]) }),
        )
        .await
        .ok();
    assert_eq!(uploaded["one_time_key_counts"]["signed_curve25519"], 3, "{uploaded}");
    c.post("/keys/upload", &alice2.token, json!({ "device_keys": device_keys(&alice2, "a2") })).await.ok();
    // Keys for another device are refused.
    let wrong = c.post("/keys/upload", &alice2.token, json!({ "device_keys": device_keys(&alice, "x") })).await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);

    // /keys/query returns both devices' keys as uploaded.
    let query = c.post("/keys/query", &bob.token, json!({ "device_keys": { alice.user_id.clone(): [] } })).await.ok();
    let devices = query["device_keys"][&alice.user_id].as_object().expect("alice's devices");
    assert_eq!(devices.len(), 2, "{query}");
    for (user, tag) in [(&alice, "a1"), (&alice2, "a2")] {
        let mut got = devices[&user.device_id].clone();
        got.as_object_mut().unwrap().remove("unsigned");
        assert_eq!(got, device_keys(user, tag));
    }
    // Asking for one device returns only it.
    let one = c
        .post("/keys/query", &bob.token, json!({ "device_keys": { alice.user_id.clone(): [alice2.device_id.clone()] } }))
        .await
        .ok();
    assert_eq!(one["device_keys"][&alice.user_id].as_object().unwrap().len(), 1);

    // The count shows in the owner's sync.
    let sync = c.sync(&alice, None, 0).await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 3, "{}", sync["device_one_time_keys_count"]);

    // Each one-time key is handed out once.
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let (key_id, key) = claim_one(&c, &bob, &alice).await.expect("a one-time key");
        assert!(key_id.starts_with("signed_curve25519:"));
        assert_eq!(key["key"], format!("otk-{}", key_id.trim_start_matches("signed_curve25519:")));
        claimed.push(key_id);
    }
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), 3, "the same one-time key was handed out twice");
    // Exhausted, no fallback: nothing.
    assert!(claim_one(&c, &bob, &alice).await.is_none());
    let sync = c.sync(&alice, None, 0).await;
    let count = &sync["device_one_time_keys_count"];
    assert!(count.get("signed_curve25519").is_none_or(|n| *n == 0), "{count}");

    // A fallback key is handed out when the one-time keys run out, and then marked used.
    c.post(
        "/keys/upload",
        &alice.token,
        json!({
            "one_time_keys": one_time_keys(&alice, &["BBBA"]),
            "fallback_keys": { "signed_curve25519:FFFF": { "key": "fallback", "fallback": true, "signatures": {} } },
        }),
    )
    .await
    .ok();
    let sync = c.sync(&alice, None, 0).await;
    assert_eq!(sync["device_unused_fallback_key_types"], json!(["signed_curve25519"]));
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 1);
    let (first, _) = claim_one(&c, &bob, &alice).await.unwrap();
    assert_eq!(first, "signed_curve25519:BBBA");
    let (second, key) = claim_one(&c, &bob, &alice).await.unwrap();
    assert_eq!(second, "signed_curve25519:FFFF");
    assert_eq!(key["key"], "fallback");
    let (third, _) = claim_one(&c, &bob, &alice).await.unwrap();
    assert_eq!(third, "signed_curve25519:FFFF", "the fallback key is reused");
    let sync = c.sync(&alice, None, 0).await;
    assert_eq!(sync["device_unused_fallback_key_types"], json!([]));
    // The other device's counts are its own.
    let sync2 = c.sync(&alice2, None, 0).await;
    assert!(sync2["device_one_time_keys_count"].get("signed_curve25519").is_none_or(|n| *n == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_device_is_delivered_once() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let bob2 = c.login(&bob).await;
    let bob_since = c.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_string();
    let bob2_since = c.sync(&bob2, None, 0).await["next_batch"].as_str().unwrap().to_string();

    let txn_id = txn();
    let path = format!("/sendToDevice/m.room_key_request/{txn_id}");
    let body = json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "secret": "hello bob" } } } });
    c.put(&path, &alice.token, body.clone()).await.ok();
    c.put(&path, &alice.token, body.clone()).await.ok(); // a retry with the same txnId
    // A new txnId is a new message.
    let body2 = json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "secret": "second" } } } });
    c.put(&format!("/sendToDevice/m.room_key_request/{}", txn()), &alice.token, body2).await.ok();

    let mut seen: Vec<Value> = Vec::new();
    let (since, _) = c
        .sync_until(&bob, Some(&bob_since), Duration::from_secs(10), |s| {
            seen.extend(s["to_device"]["events"].as_array().unwrap().iter().cloned());
            seen.len() >= 2
        })
        .await;
    // One more sync: nothing is delivered twice.
    let after = c.sync(&bob, Some(&since), 0).await;
    seen.extend(after["to_device"]["events"].as_array().unwrap().iter().cloned());
    assert_eq!(seen.len(), 2, "each message exactly once: {seen:#?}");
    assert_eq!(seen[0]["sender"], alice.user_id.as_str());
    assert_eq!(seen[0]["type"], "m.room_key_request");
    assert_eq!(seen[0]["content"]["secret"], "hello bob");
    assert_eq!(seen[1]["content"]["secret"], "second");

    // Bob's other device received nothing.
    let other = c.sync(&bob2, Some(&bob2_since), 0).await;
    assert_eq!(other["to_device"]["events"], json!([]), "{other}");

    // "*" reaches every device of the user.
    let all = json!({ "messages": { bob.user_id.clone(): { "*": { "to": "everyone" } } } });
    c.put(&format!("/sendToDevice/m.dummy/{}", txn()), &alice.token, all).await.ok();
    for (device, since) in [(&bob, since.as_str()), (&bob2, other["next_batch"].as_str().unwrap())] {
        c.sync_until(device, Some(since), Duration::from_secs(10), |s| {
            s["to_device"]["events"].as_array().unwrap().iter().any(|e| e["content"]["to"] == "everyone")
        })
        .await;
    }
}

/// Spec (send-to-device module): "A message is delivered exactly once to each client device";
/// once the client syncs with the next_batch that carried a message, the server deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_to_device_messages_are_not_redelivered() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let since = c.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_string();
    let body = json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "n": 1 } } } });
    c.put(&format!("/sendToDevice/m.dummy/{}", txn()), &alice.token, body).await.ok();
    let (since, _) = c
        .sync_until(&bob, Some(&since), Duration::from_secs(10), |s| !s["to_device"]["events"].as_array().unwrap().is_empty())
        .await;
    // Acknowledge by syncing with the token that followed the delivery.
    c.sync(&bob, Some(&since), 0).await;
    let initial = c.sync(&bob, None, 0).await;
    assert_eq!(initial["to_device"]["events"], json!([]), "an acknowledged message came back: {}", initial["to_device"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_list_changes_and_cross_signing() {
    let server = TestServer::start().await;
    let c = server.client();
    let alice = c.register("alice").await;
    let bob = c.register("bob").await;
    let carol = c.register("carol").await; // shares no room with Alice
    let room_id = c.create_room(&alice, json!({ "preset": "public_chat" })).await;
    c.join(&bob, &room_id).await.ok();
    let bob_before = c.sync(&bob, None, 0).await["next_batch"].as_str().unwrap().to_string();
    let carol_before = c.sync(&carol, None, 0).await["next_batch"].as_str().unwrap().to_string();

    c.post("/keys/upload", &alice.token, json!({ "device_keys": device_keys(&alice, "k1") })).await.ok();
    let changed = |s: &Value| s["device_lists"]["changed"].as_array().unwrap().iter().any(|u| u == alice.user_id.as_str());
    let (bob_after, _) = c.sync_until(&bob, Some(&bob_before), Duration::from_secs(10), changed).await;
    // Nothing repeats on the next sync.
    let next = c.sync(&bob, Some(&bob_after), 0).await;
    assert!(!changed(&next), "{next}");
    // Carol shares no room with Alice: she is not told.
    let carol_sync = c.sync(&carol, Some(&carol_before), 0).await;
    assert!(!changed(&carol_sync), "{carol_sync}");

    let changes = c
        .request(Method::GET, &format!("/keys/changes?from={}&to={}", enc(&bob_before), enc(&bob_after)), Some(&bob.token), None)
        .await
        .ok();
    assert!(changes["changed"].as_array().unwrap().iter().any(|u| u == alice.user_id.as_str()), "{changes}");
    let none = c
        .request(Method::GET, &format!("/keys/changes?from={}&to={}", enc(&bob_after), enc(&bob_after)), Some(&bob.token), None)
        .await
        .ok();
    assert_eq!(none["changed"], json!([]));

    // A new room-mate's keys show up too: Carol joins and uploads.
    c.join(&carol, &room_id).await.ok();
    let bob_mid = c.sync(&bob, Some(&bob_after), 0).await["next_batch"].as_str().unwrap().to_string();
    c.post("/keys/upload", &carol.token, json!({ "device_keys": device_keys(&carol, "c1") })).await.ok();
    c.sync_until(&bob, Some(&bob_mid), Duration::from_secs(10), |s| {
        s["device_lists"]["changed"].as_array().unwrap().iter().any(|u| u == carol.user_id.as_str())
    })
    .await;

    // Cross-signing: the first upload needs no password.
    let key = |usage: &str, id: &str| {
        json!({ "user_id": alice.user_id, "usage": [usage], "keys": { format!("ed25519:{id}"): id } })
    };
    let mut self_signing = key("self_signing", "SSK1");
    self_signing["signatures"] = json!({ alice.user_id.clone(): { "ed25519:MSK1": "sig" } });
    let mut user_signing = key("user_signing", "USK1");
    user_signing["signatures"] = json!({ alice.user_id.clone(): { "ed25519:MSK1": "sig" } });
    let upload = json!({ "master_key": key("master", "MSK1"), "self_signing_key": self_signing, "user_signing_key": user_signing });
    c.post("/keys/device_signing/upload", &alice.token, upload.clone()).await.ok();
    // Uploading the same keys again is idempotent (no auth).
    c.post("/keys/device_signing/upload", &alice.token, upload.clone()).await.ok();

    let mine = c.post("/keys/query", &alice.token, json!({ "device_keys": { alice.user_id.clone(): [] } })).await.ok();
    assert_eq!(mine["master_keys"][&alice.user_id], upload["master_key"]);
    assert_eq!(mine["self_signing_keys"][&alice.user_id], upload["self_signing_key"]);
    assert_eq!(mine["user_signing_keys"][&alice.user_id], upload["user_signing_key"]);
    // Others see the master and self-signing keys but never the user-signing key.
    let theirs = c.post("/keys/query", &bob.token, json!({ "device_keys": { alice.user_id.clone(): [] } })).await.ok();
    assert_eq!(theirs["master_keys"][&alice.user_id], upload["master_key"]);
    assert_eq!(theirs["self_signing_keys"][&alice.user_id], upload["self_signing_key"]);
    assert!(theirs["user_signing_keys"].get(&alice.user_id).is_none(), "{theirs}");

    // Replacing the master key needs password auth.
    let replacement = json!({ "master_key": key("master", "MSK2") });
    let refused = c.post("/keys/device_signing/upload", &alice.token, replacement.clone()).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body["flows"].to_string().contains("m.login.password"));
    let mut authed = replacement.clone();
    authed["auth"] = json!({
        "type": "m.login.password", "session": refused.body["session"],
        "identifier": { "type": "m.id.user", "user": alice.localpart }, "password": alice.password,
    });
    c.post("/keys/device_signing/upload", &alice.token, authed).await.ok();
    let mine = c.post("/keys/query", &bob.token, json!({ "device_keys": { alice.user_id.clone(): [] } })).await.ok();
    assert_eq!(mine["master_keys"][&alice.user_id], replacement["master_key"]);

    // A signature upload on a device key shows in the next query.
    let signed = json!({ alice.user_id.clone(): { alice.device_id.clone(): {
        "signatures": { alice.user_id.clone(): { "ed25519:SSK1": "device-sig" } }
    } } });
    let result = c.post("/keys/signatures/upload", &alice.token, signed).await.ok();
    assert_eq!(result["failures"], json!({}));
    let query = c.post("/keys/query", &bob.token, json!({ "device_keys": { alice.user_id.clone(): [] } })).await.ok();
    assert_eq!(query["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id]["ed25519:SSK1"], "device-sig");

    // Bob may not sign Alice's device keys or her self-signing key, nor add signatures in
    // Alice's name; only her master key, with his own signature.
    let meddling = json!({ alice.user_id.clone(): {
        alice.device_id.clone(): { "signatures": { bob.user_id.clone(): { "ed25519:BOB": "bob-sig" } } },
        "SSK1": { "signatures": { bob.user_id.clone(): { "ed25519:BOB": "bob-sig" } } },
        "MSK2": { "signatures": {
            bob.user_id.clone(): { "ed25519:BUSK": "bob-master-sig" },
            alice.user_id.clone(): { "ed25519:FORGED": "forged" },
        } },
    } });
    let result = c.post("/keys/signatures/upload", &bob.token, meddling).await.ok();
    assert_eq!(result["failures"][&alice.user_id]["SSK1"]["errcode"], "M_FORBIDDEN", "{result}");
    let query = c.post("/keys/query", &bob.token, json!({ "device_keys": { alice.user_id.clone(): [] } })).await.ok();
    let device_signatures = &query["device_keys"][&alice.user_id][&alice.device_id]["signatures"];
    assert!(device_signatures.get(&bob.user_id).is_none(), "{device_signatures}");
    let master_signatures = &query["master_keys"][&alice.user_id]["signatures"];
    assert_eq!(master_signatures[&bob.user_id]["ed25519:BUSK"], "bob-master-sig");
    assert!(master_signatures[&alice.user_id].get("ed25519:FORGED").is_none(), "{master_signatures}");
}

// ---- media ----

fn test_png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn get_raw(c: &Client, path: &str, token: Option<&str>) -> Resp {
    c.request(Method::GET, path, token, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_upload_download_thumbnail_and_limits() {
    let mut config = test_config();
    config.limits.max_upload_bytes = 256 * 1024;
    let server = TestServer::with_config(config).await;
    let c = server.client();
    let alice = c.register("alice").await;

    let png = test_png(64, 48);
    let uploaded = c.raw(Method::POST, "/_matrix/media/v3/upload?filename=pic.png", Some(&alice.token), "image/png", png.clone()).await.ok();
    let uri = uploaded["content_uri"].as_str().unwrap();
    let (server_name, media_id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    assert_eq!(server_name, "test.local");

    // Authenticated download: byte-identical, with the content type.
    let path = format!("/_matrix/client/v1/media/download/{server_name}/{media_id}");
    let download = get_raw(&c, &path, Some(&alice.token)).await;
    assert_eq!(download.status, 200);
    assert_eq!(download.raw, png, "downloaded bytes differ");
    assert_eq!(download.headers["content-type"], "image/png");
    get_raw(&c, &path, None).await.expect_err(401, "M_MISSING_TOKEN");
    get_raw(&c, &path, Some("not-a-token")).await.expect_err(401, "M_UNKNOWN_TOKEN");
    let named = get_raw(&c, &format!("{path}/other.png"), Some(&alice.token)).await;
    assert_eq!(named.raw, png);
    assert!(named.headers["content-disposition"].to_str().unwrap().contains("other.png"));

    // Legacy download.
    let legacy = get_raw(&c, &format!("/_matrix/media/v3/download/{server_name}/{media_id}"), None).await;
    assert_eq!(legacy.status, 200);
    assert_eq!(legacy.raw, png);

    // Thumbnails: crop gives exactly the asked size; scale keeps the aspect ratio.
    let thumb_path = format!("/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}");
    for _ in 0..2 {
        // The second round is served from the thumbnail cache.
        let thumb = get_raw(&c, &format!("{thumb_path}?width=16&height=16&method=crop"), Some(&alice.token)).await;
        assert_eq!(thumb.status, 200, "{:?}", thumb.body);
        assert_eq!(thumb.headers["content-type"], "image/png");
        let decoded = image::load_from_memory_with_format(&thumb.raw, image::ImageFormat::Png).expect("a decodable PNG");
        assert_eq!((decoded.width(), decoded.height()), (16, 16));
    }
    let scaled = get_raw(&c, &format!("{thumb_path}?width=32&height=32&method=scale"), Some(&alice.token)).await;
    let decoded = image::load_from_memory(&scaled.raw).expect("a decodable image");
    assert_eq!((decoded.width(), decoded.height()), (32, 24));
    get_raw(&c, &format!("{thumb_path}?width=16&height=16"), None).await.expect_err(401, "M_MISSING_TOKEN");
    let legacy_thumb = get_raw(&c, &format!("/_matrix/media/v3/thumbnail/{server_name}/{media_id}?width=8&height=8&method=crop"), None).await;
    let decoded = image::load_from_memory(&legacy_thumb.raw).expect("a decodable image");
    assert_eq!((decoded.width(), decoded.height()), (8, 8));

    // Config.
    let config = get_raw(&c, "/_matrix/client/v1/media/config", Some(&alice.token)).await.ok();
    assert_eq!(config["m.upload.size"], 256 * 1024);
    get_raw(&c, "/_matrix/client/v1/media/config", None).await.expect_err(401, "M_MISSING_TOKEN");
    assert_eq!(get_raw(&c, "/_matrix/media/v3/config", None).await.ok()["m.upload.size"], 256 * 1024);

    // Limits and errors.
    let too_big = c.raw(Method::POST, "/_matrix/media/v3/upload", Some(&alice.token), "application/octet-stream", vec![7u8; 256 * 1024 + 1]).await;
    too_big.expect_err(413, "M_TOO_LARGE");
    let just_fits = c.raw(Method::POST, "/_matrix/media/v3/upload", Some(&alice.token), "application/octet-stream", vec![7u8; 256 * 1024]).await;
    assert_eq!(just_fits.status, 200, "{}", just_fits.body);
    c.raw(Method::POST, "/_matrix/media/v3/upload", None, "image/png", png.clone()).await.expect_err(401, "M_MISSING_TOKEN");
    get_raw(&c, &format!("/_matrix/client/v1/media/download/{server_name}/NoSuchMedia"), Some(&alice.token)).await.expect_err(404, "M_NOT_FOUND");
    get_raw(&c, &format!("/_matrix/client/v1/media/download/other.server/{media_id}"), Some(&alice.token)).await.expect_err(404, "M_NOT_FOUND");

    // A non-image upload: downloadable, served as an attachment.
    let text = b"plain old bytes \x00\x01\x02".to_vec();
    let uploaded = c.raw(Method::POST, "/_matrix/media/v3/upload", Some(&alice.token), "text/html", text.clone()).await.ok();
    let id = uploaded["content_uri"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let download = get_raw(&c, &format!("/_matrix/client/v1/media/download/test.local/{id}"), Some(&alice.token)).await;
    assert_eq!(download.raw, text);
    assert!(download.headers["content-disposition"].to_str().unwrap().starts_with("attachment"), "HTML must not render inline");
}
