//! The node's bounded caches: each is cheap to refill from the store or the read model.

use std::sync::{Arc, Mutex};

pub use crate::bounded::BoundedMap;

/// The spec's default push ruleset per user (it names the user), built on first use.
pub struct DefaultPushRules(BoundedMap<String, Arc<serde_json::Value>>);

impl Default for DefaultPushRules {
    fn default() -> Self {
        DefaultPushRules(BoundedMap::new(100_000))
    }
}

impl DefaultPushRules {
    pub fn get(&self, user_id: &str) -> Arc<serde_json::Value> {
        if let Some(rules) = self.0.get(user_id) {
            return rules;
        }
        let rules = Arc::new(haetae_matrix::push::default_ruleset(user_id));
        self.0.put(user_id.to_string(), rules.clone());
        rules
    }
}

/// A user's unread counts in one room: `notifications` and `highlights` among the events after
/// `after` (their read position) up to `upto`, under the push rules of revision `rules_seq`.
#[derive(Clone, Copy, Debug)]
pub struct UnreadMemo {
    pub after: u64,
    pub rules_seq: u64,
    pub upto: u64,
    pub notifications: u64,
    pub highlights: u64,
}

/// Unread counts as last computed, per (user, room).
pub type UnreadCounts = BoundedMap<(String, String), UnreadMemo>;

/// A fixed set of threads for password hashing. Each argon2id hash needs its memory cost (19 MiB
/// by default) while it runs: on the shared blocking pool a login storm held that much per
/// concurrent request, and the allocator kept it afterwards in one arena per thread that had
/// hashed (1.5 GB resident after 100 concurrent registrations). One thread per core bounds both.
pub struct HashingPool {
    jobs: Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

impl HashingPool {
    pub fn new(threads: usize) -> HashingPool {
        let (sender, receiver) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads.max(1) {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new().name(format!("password-hash-{index}")).spawn(move || {
                loop {
                    let job = receiver.lock().expect("hashing queue lock").recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a password hashing thread");
            }
        }
        HashingPool { jobs: Mutex::new(sender) }
    }

    /// Runs `work` on a hashing thread; None if the pool is gone.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs.lock().expect("hashing queue lock").send(job).ok()?;
        result.await.ok()
    }
}
