//! Read-model snapshots: one object per deployment in a replicated object store, so a starting
//! node (or the node of a rebuilt DC) loads the newest and replays only the log after it.
//!
//! Owns the bucket and the object's name. Never interprets the bytes: their format, version and
//! checksum are the server's business. A snapshot is an optimisation: a missing one is `None`.

use async_nats::jetstream::{self, object_store};
use bytes::Bytes;
use tokio::io::AsyncReadExt;

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

    /// Replaces the deployment's snapshot with `bytes`; `description` travels with it (readable
    /// without fetching the bytes, see [`Snapshots::description`]).
    pub async fn put(&self, bytes: Bytes, description: &str) -> Result<(), SnapshotError> {
        let meta = object_store::ObjectMetadata {
            name: OBJECT.to_string(),
            description: Some(description.to_string()),
            ..Default::default()
        };
        // Read straight from the bytes: a snapshot of many rooms is tens of megabytes.
        let mut reader = std::io::Cursor::new(bytes);
        self.objects.put(meta, &mut reader).await.map_err(|e| SnapshotError(e.to_string()))?;
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

    /// The current snapshot's bytes, if there is one.
    pub async fn get(&self) -> Result<Option<Bytes>, SnapshotError> {
        let mut object = match self.objects.get(OBJECT).await {
            Ok(object) => object,
            Err(error) if error.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(SnapshotError(error.to_string())),
        };
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).await.map_err(|e| SnapshotError(e.to_string()))?;
        Ok(Some(Bytes::from(bytes)))
    }
}
