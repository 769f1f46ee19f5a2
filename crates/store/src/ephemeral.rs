//! Ephemeral fan-out over plain NATS subjects: reaches every node in every DC, stores nothing.
//!
//! Used for typing notifications, which the spec lets a server forget.

use bytes::Bytes;
use futures::{Stream, StreamExt};

pub(crate) const SUBJECT: &str = "haetae.ephemeral";

#[derive(Clone)]
pub struct Ephemeral {
    client: async_nats::Client,
}

impl Ephemeral {
    pub(crate) fn new(client: async_nats::Client) -> Ephemeral {
        Ephemeral { client }
    }

    /// Sends `payload` to every node (best effort).
    pub async fn publish(&self, payload: Bytes) -> Result<(), String> {
        self.client.publish(SUBJECT, payload).await.map_err(|e| e.to_string())
    }

    /// Everything any node publishes from now on.
    pub async fn subscribe(&self) -> Result<impl Stream<Item = Bytes> + Send + 'static + use<>, String> {
        let subscriber = self.client.subscribe(SUBJECT).await.map_err(|e| e.to_string())?;
        Ok(subscriber.map(|message| message.payload))
    }
}
