//! Read-model snapshots: one object per deployment in a replicated object store, so a starting
//! node (or the node of a rebuilt DC) loads the newest and replays only the log after it.
//!
//! Owns the bucket and the object's name. Never interprets the bytes: their format, version and
//! checksum are the server's business. A snapshot is an optimisation: a missing one is `None`.

use async_nats::jetstream::{self, object_store};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::{ConnectError, StoreConfig};

pub(crate) const BUCKET: &str = "haetae_snapshots";
const OBJECT: &str = "read-model";

#[derive(Debug, thiserror::Error)]
#[error("the snapshot store is unavailable: {0}")]
pub struct SnapshotError(pub String);

#[derive(Clone)]
pub struct Snapshots {
    objects: object_store::ObjectStore,
}

impl Snapshots {
    pub(crate) async fn open(js: &jetstream::Context, config: &StoreConfig) -> Result<Snapshots, ConnectError> {
        Ok(Snapshots { objects: crate::media::open_object_store(js, config, BUCKET).await? })
    }

    /// Replaces the deployment's snapshot with what `reader` yields (streamed in chunks: a
    /// snapshot of many rooms is hundreds of megabytes); `description` travels with it (readable
    /// without fetching the bytes, see [`Snapshots::description`]).
    pub async fn put(&self, reader: &mut (impl AsyncRead + Unpin), description: &str) -> Result<(), SnapshotError> {
        let meta = object_store::ObjectMetadata {
            name: OBJECT.to_string(),
            description: Some(description.to_string()),
            ..Default::default()
        };
        self.objects.put(meta, reader).await.map_err(|e| SnapshotError(e.to_string()))?;
        Ok(())
    }

    /// The description of the current snapshot, if there is one.
    pub async fn description(&self) -> Result<Option<String>, SnapshotError> {
        match self.objects.info(OBJECT).await {
            Ok(info) => Ok(Some(info.description.unwrap_or_default())),
            Err(error) if error.kind() == object_store::InfoErrorKind::NotFound => Ok(None),
            Err(error) => Err(SnapshotError(error.to_string())),
        }
    }

    /// Copies the current snapshot's bytes into `out` (streamed); false if there is none.
    pub async fn get_into(&self, out: &mut (impl AsyncWrite + Unpin)) -> Result<bool, SnapshotError> {
        let mut object = match self.objects.get(OBJECT).await {
            Ok(object) => object,
            Err(error) if error.kind() == object_store::GetErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(SnapshotError(error.to_string())),
        };
        tokio::io::copy(&mut object, out).await.map_err(|e| SnapshotError(e.to_string()))?;
        out.flush().await.map_err(|e| SnapshotError(e.to_string()))?;
        Ok(true)
    }
}
