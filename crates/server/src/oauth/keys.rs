//! The keys that sign OpenID Connect id_tokens: one deployment-wide key set in replicated KV, so
//! every node in every DC signs with the same current key and publishes the same JWKS.
//!
//! The key set is one record (`Meta` / `oidc_signing_keys`), changed only by compare-and-set:
//! the first node that needs a key creates the set (create-if-absent), and whichever node sees
//! that a rotation is due writes the next key; a node that loses such a race reads the winner's
//! set and uses it. A key signs only after the record naming it was acknowledged, so no node
//! ever signs with a key the others do not publish.
//!
//! Rotation ([`plan`], pure): a new key is published `publish_ahead_s` before it starts signing
//! (relying parties cache the JWKS for less than that), and a replaced key stays published until
//! every id_token it signed has expired. ES256 (ECDSA P-256, SHA-256) through `ring`.
//!
//! Private keys never leave this module except as signatures, and never reach a log line
//! ([`SigningKey`]'s `Debug` omits them).

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::records;
use crate::app::App;
use crate::config::OauthConfig;
use crate::error::{ApiResult, MatrixError};

/// The JWS algorithm of every key.
pub const ALGORITHM: &str = "ES256";
/// Clock difference between nodes (and relying parties) tolerated when retiring a key, seconds.
const CLOCK_SKEW_S: u64 = 60;
/// Compare-and-set attempts before a node gives up on changing the key set (each lost attempt
/// means another node changed it; the next read usually needs no change at all).
const MAX_WRITE_ATTEMPTS: usize = 5;
/// Most keys a set holds (current, next, and retired ones still covering live tokens).
const MAX_KEYS: usize = 8;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// One signing key as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// The JWK `kid`: random, names the key in id_token headers.
    pub kid: String,
    pub created_s: u64,
    /// When the key starts signing; it signs until the next key's `signs_from_s`.
    pub signs_from_s: u64,
    /// The private key, PKCS#8 (base64url). Secret.
    pub pkcs8: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_s", &self.created_s)
            .field("signs_from_s", &self.signs_from_s)
            .finish_non_exhaustive()
    }
}

/// The deployment's keys, ordered by `signs_from_s`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    pub keys: Vec<SigningKey>,
}

/// The rotation schedule, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub rotation_s: u64,
    pub publish_ahead_s: u64,
    pub id_token_lifetime_s: u64,
}

impl Schedule {
    pub fn from_config(config: &OauthConfig) -> Schedule {
        let rotation_s = config.signing_key_rotation_s.max(1);
        Schedule {
            rotation_s,
            publish_ahead_s: config.signing_key_publish_ahead_s.min(rotation_s),
            id_token_lifetime_s: config.id_token_lifetime_s.max(1),
        }
    }

    /// How long relying parties may cache the JWKS: well under the publish-ahead time, so a
    /// key is in every cache before it signs.
    pub fn jwks_max_age_s(&self) -> u64 {
        (self.publish_ahead_s / 2).min(3600)
    }
}

impl KeySet {
    /// The key that signs at `now_s`: the newest that has started. A set whose keys all start
    /// later (this node's clock is behind the one that wrote them) signs with its first key.
    pub fn signing_key(&self, now_s: u64) -> Option<&SigningKey> {
        self.keys.iter().rev().find(|k| k.signs_from_s <= now_s).or_else(|| self.keys.first())
    }
}

/// The key set as it should be at `now_s`, or None when it needs no change. `fresh` makes a new
/// key that starts signing at the time given. Three rules, in order:
/// 1. a key whose successor has signed for longer than an id_token lives (plus clock skew) is
///    dropped: nothing it signed is still valid;
/// 2. an empty set gets a key that signs at once (no relying party can have cached a JWKS yet);
/// 3. when the current key is due for replacement within `publish_ahead_s` and no successor is
///    published yet, one is added, starting no sooner than `publish_ahead_s` from now.
pub fn plan(set: &KeySet, now_s: u64, schedule: Schedule, fresh: impl FnOnce(u64) -> SigningKey) -> Option<KeySet> {
    let mut keys = set.keys.clone();
    keys.sort_by_key(|k| k.signs_from_s);
    let retain_s = schedule.id_token_lifetime_s + CLOCK_SKEW_S;
    let before = keys.len();
    let retired = keys
        .windows(2)
        .take_while(|pair| pair[1].signs_from_s + retain_s <= now_s)
        .count();
    keys.drain(..retired);
    let mut changed = keys.len() != before;
    match keys.iter().rev().find(|k| k.signs_from_s <= now_s) {
        None if keys.is_empty() => {
            keys.push(fresh(now_s));
            changed = true;
        }
        None => {}
        Some(current) => {
            let has_successor = keys.iter().any(|k| k.signs_from_s > current.signs_from_s);
            let due_s = current.signs_from_s + schedule.rotation_s;
            if !has_successor && due_s <= now_s + schedule.publish_ahead_s {
                keys.push(fresh(due_s.max(now_s + schedule.publish_ahead_s)));
                changed = true;
            }
        }
    }
    if keys.len() > MAX_KEYS {
        let excess = keys.len() - MAX_KEYS;
        keys.drain(..excess);
        changed = true;
    }
    changed.then_some(KeySet { keys })
}

/// A new P-256 key that signs from `signs_from_s`.
pub fn generate(now_s: u64, signs_from_s: u64) -> ApiResult<SigningKey> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| MatrixError::unavailable("could not generate a signing key"))?;
    let kid_bytes: [u8; 12] = rand::random();
    Ok(SigningKey { kid: b64(&kid_bytes), created_s: now_s, signs_from_s, pkcs8: b64(pkcs8.as_ref()) })
}

fn key_pair(key: &SigningKey) -> Option<EcdsaKeyPair> {
    let pkcs8 = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&key.pkcs8).ok()?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &SystemRandom::new()).ok()
}

/// The claims of a compact JWS one of the set's keys signed (ES256, named by `kid`), or None.
/// Checks the signature only: what the claims say (issuer, expiry) is the caller's business.
pub fn verify_jwt(set: &KeySet, token: &str) -> Option<Value> {
    let decode = |part: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok();
    let mut parts = token.split('.');
    let (head, body, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&decode(head)?).ok()?;
    if header["alg"] != ALGORITHM {
        return None;
    }
    let key = set.keys.iter().find(|k| header["kid"] == k.kid.as_str())?;
    let pair = key_pair(key)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
        .verify(format!("{head}.{body}").as_bytes(), &decode(signature)?)
        .ok()?;
    serde_json::from_slice(&decode(body)?).ok()
}

/// The public half of a key as a JWK (RFC 7517, RFC 7518 section 6.2). None for a key that does
/// not parse (it is left out of the JWKS and never signs).
pub fn public_jwk(key: &SigningKey) -> Option<Value> {
    let pair = key_pair(key)?;
    // An uncompressed P-256 point: 0x04, then x and y, 32 bytes each.
    let point = pair.public_key().as_ref();
    if point.len() != 65 || point[0] != 4 {
        return None;
    }
    Some(json!({
        "kty": "EC",
        "crv": "P-256",
        "x": b64(&point[1..33]),
        "y": b64(&point[33..]),
        "kid": key.kid,
        "use": "sig",
        "alg": ALGORITHM,
    }))
}

/// The JWK Set of every key in the set: the next key before it signs, retired keys until what
/// they signed has expired.
pub fn jwks(set: &KeySet) -> Value {
    json!({ "keys": set.keys.iter().filter_map(public_jwk).collect::<Vec<_>>() })
}

/// A compact JWS (RFC 7515) of `claims`, signed with `key`.
pub fn sign_jwt(key: &SigningKey, claims: &Value) -> ApiResult<String> {
    let pair = key_pair(key).ok_or_else(|| MatrixError::unavailable("the signing key is unreadable"))?;
    let header = json!({ "alg": ALGORITHM, "typ": "JWT", "kid": key.kid });
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let claims = serde_json::to_vec(claims).unwrap_or_default();
    let signing_input = format!("{}.{}", b64(&header), b64(&claims));
    let signature = pair
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .map_err(|_| MatrixError::unavailable("could not sign the id_token"))?;
    Ok(format!("{signing_input}.{}", b64(signature.as_ref())))
}

/// The key set as every node sees it now, after bringing it up to date with the schedule (which
/// creates it on a fresh deployment). Reads the record from the bucket's leader each time, so a
/// rotation written by any node is used by all at once.
pub async fn current(app: &App) -> ApiResult<KeySet> {
    let schedule = Schedule::from_config(&app.config.oauth);
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let (set, revision) = match records::signing_key_set(app).await? {
            Some((value, revision)) => {
                // A record this version cannot read is never overwritten: that would drop keys
                // whose tokens relying parties still verify.
                let set = serde_json::from_slice::<KeySet>(&value)
                    .map_err(|_| MatrixError::unavailable("the signing key set is unreadable"))?;
                (set, Some(revision))
            }
            None => (KeySet::default(), None),
        };
        let now_s = super::now_s();
        let mut generated = Ok(());
        let next = plan(&set, now_s, schedule, |signs_from_s| match generate(now_s, signs_from_s) {
            Ok(key) => key,
            Err(error) => {
                generated = Err(error);
                SigningKey { kid: String::new(), created_s: 0, signs_from_s, pkcs8: String::new() }
            }
        });
        generated?;
        let Some(next) = next else { return Ok(set) };
        let bytes: bytes::Bytes = serde_json::to_vec(&next).unwrap_or_default().into();
        if records::write_signing_key_set(app, bytes, revision).await? {
            let kids: Vec<&str> = next.keys.iter().map(|k| k.kid.as_str()).collect();
            tracing::info!(?kids, "id_token signing key set updated");
            return Ok(next);
        }
        // Another node changed the set first: read what it wrote.
    }
    Err(MatrixError::unavailable("the signing key set is changing; try again"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: Schedule = Schedule { rotation_s: 1000, publish_ahead_s: 100, id_token_lifetime_s: 50 };

    fn key(kid: &str, signs_from_s: u64) -> SigningKey {
        SigningKey { kid: kid.into(), created_s: 0, signs_from_s, pkcs8: String::new() }
    }

    fn kids(set: &KeySet) -> Vec<&str> {
        set.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    /// Runs the schedule from `start_s` to `end_s` one second at a time, checking the invariants:
    /// every key that signs was in the set published at least `publish_ahead_s` earlier (after
    /// the first), and a key stays published until its last signature has expired.
    #[test]
    fn keys_are_published_before_they_sign_and_kept_until_their_tokens_expire() {
        let mut set = KeySet::default();
        let mut first_seen: std::collections::HashMap<String, u64> = Default::default();
        let mut last_signed: std::collections::HashMap<String, u64> = Default::default();
        let mut counter = 0;
        let mut signing_kids = std::collections::BTreeSet::new();
        for now_s in 10..5000 {
            if let Some(next) = plan(&set, now_s, SCHEDULE, |from| {
                counter += 1;
                key(&format!("k{counter}"), from)
            }) {
                set = next;
            }
            // Applying the plan again changes nothing: nodes that read the same set agree.
            assert_eq!(plan(&set, now_s, SCHEDULE, |_| unreachable!()), None);
            for k in &set.keys {
                first_seen.entry(k.kid.clone()).or_insert(now_s);
            }
            let signer = set.signing_key(now_s).unwrap().kid.clone();
            if signer != "k1" {
                assert!(first_seen[&signer] + SCHEDULE.publish_ahead_s <= now_s, "{signer} signed before it was published long enough");
            }
            last_signed.insert(signer.clone(), now_s);
            signing_kids.insert(signer);
            for (kid, signed_s) in &last_signed {
                if signed_s + SCHEDULE.id_token_lifetime_s > now_s {
                    assert!(set.keys.iter().any(|k| &k.kid == kid), "{kid} dropped while its tokens live");
                }
            }
            assert!(set.keys.len() <= 3, "{:?}", kids(&set));
        }
        // About one key per rotation period, each signing in turn.
        assert_eq!(signing_kids.len(), 5, "{signing_kids:?}");
    }

    #[test]
    fn a_fresh_set_signs_at_once_and_a_late_node_keeps_the_first_key() {
        let set = plan(&KeySet::default(), 500, SCHEDULE, |from| key("a", from)).unwrap();
        assert_eq!(kids(&set), ["a"]);
        assert_eq!(set.signing_key(500).unwrap().kid, "a");
        // A node whose clock is behind still signs with a published key.
        assert_eq!(set.signing_key(400).unwrap().kid, "a");
        // A successor is added 100 s before the rotation is due, and signs when it is due.
        assert_eq!(plan(&set, 1399, SCHEDULE, |_| unreachable!()), None);
        let set = plan(&set, 1400, SCHEDULE, |from| key("b", from)).unwrap();
        assert_eq!(set.keys[1].signs_from_s, 1500);
        assert_eq!(set.signing_key(1499).unwrap().kid, "a");
        assert_eq!(set.signing_key(1500).unwrap().kid, "b");
        // After a long outage of every node, the successor still waits to be published first.
        let stale = KeySet { keys: vec![key("a", 0)] };
        let set = plan(&stale, 9000, SCHEDULE, |from| key("b", from)).unwrap();
        assert_eq!(set.keys[1].signs_from_s, 9100);
        assert_eq!(set.signing_key(9050).unwrap().kid, "a");
        // `a` retires 50 s (token lifetime) + 60 s (skew) after `b` signs.
        assert_eq!(kids(&plan(&set, 9209, SCHEDULE, |_| unreachable!()).unwrap_or(set.clone())), ["a", "b"]);
        assert_eq!(kids(&plan(&set, 9210, SCHEDULE, |_| unreachable!()).unwrap()), ["b"]);
    }

    #[test]
    fn generated_keys_sign_verifiable_tokens_and_hide_their_secret() {
        let key = generate(1, 1).unwrap();
        let jwk = public_jwk(&key).unwrap();
        assert_eq!((jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["alg"].as_str()), (Some("EC"), Some("P-256"), Some("ES256")));
        assert!(jwk.get("d").is_none());
        let token = sign_jwt(&key, &json!({"sub": "@a:b"})).unwrap();
        let (input, signature) = token.rsplit_once('.').unwrap();
        let decode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap();
        let mut point = vec![4u8];
        point.extend(decode(jwk["x"].as_str().unwrap()));
        point.extend(decode(jwk["y"].as_str().unwrap()));
        let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point);
        assert!(public.verify(input.as_bytes(), &decode(signature)).is_ok());
        assert!(public.verify(b"other", &decode(signature)).is_err());
        let header: Value = serde_json::from_slice(&decode(input.split_once('.').unwrap().0)).unwrap();
        assert_eq!(header["kid"], key.kid);
        assert!(!format!("{key:?}").contains(&key.pkcs8));
        assert!(!format!("{:?}", KeySet { keys: vec![key.clone()] }).contains(&key.pkcs8));

        let set = KeySet { keys: vec![key.clone()] };
        assert_eq!(verify_jwt(&set, &token), Some(json!({"sub": "@a:b"})));
        let tampered = format!("{}.{}.{signature}", input.split_once('.').unwrap().0, b64(br#"{"sub":"@x:b"}"#));
        assert_eq!(verify_jwt(&set, &tampered), None);
        assert_eq!(verify_jwt(&KeySet { keys: vec![generate(1, 1).unwrap()] }, &token), None, "another key");
        assert_eq!(verify_jwt(&set, "a.b"), None);
    }
}
