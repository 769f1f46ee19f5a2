//! Media: uploaded files in a JetStream object store, replicated like everything else.
//!
//! Owns the bucket name and how a file's content type and name travel with it (object metadata).
//! Never generates media ids or thumbnails: that is the server's business.

use std::collections::HashMap;

use async_nats::jetstream::{self, object_store};
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::{ConnectError, StoreConfig, encode_name};

pub(crate) const BUCKET: &str = "haetae_media";

/// What is kept beside a file's bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaMeta {
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the media store is unavailable: {0}")]
    Unavailable(String),
    #[error("the file is larger than {limit_bytes} bytes")]
    TooLarge { limit_bytes: u64 },
}

/// Opens (creating it if needed) the object store `bucket`, replicated like everything else.
pub(crate) async fn open_object_store(
    js: &jetstream::Context,
    config: &StoreConfig,
    bucket: &str,
) -> Result<object_store::ObjectStore, ConnectError> {
    let store_config = object_store::Config {
        bucket: bucket.to_string(),
        num_replicas: config.replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    crate::kv::with_retry(config, || async {
        match js.get_object_store(bucket).await {
            Ok(store) => Ok(store),
            Err(_) => js.create_object_store(store_config.clone()).await.map_err(|e| e.to_string()),
        }
    })
    .await
    .map_err(|message| ConnectError::Prepare { name: bucket.into(), message })
}

#[derive(Clone)]
pub struct MediaStore {
    objects: object_store::ObjectStore,
    max_bytes: u64,
}

impl MediaStore {
    pub(crate) async fn open(js: &jetstream::Context, config: &StoreConfig) -> Result<MediaStore, ConnectError> {
        let objects = open_object_store(js, config, BUCKET).await?;
        Ok(MediaStore { objects, max_bytes: config.max_media_bytes })
    }

    /// Stores `bytes` under `name`, replacing any earlier object of that name.
    pub async fn put(&self, name: &str, bytes: Bytes, meta: &MediaMeta) -> Result<(), MediaError> {
        if bytes.len() as u64 > self.max_bytes {
            return Err(MediaError::TooLarge { limit_bytes: self.max_bytes });
        }
        let mut metadata = HashMap::new();
        if let Some(content_type) = &meta.content_type {
            metadata.insert("content_type".to_string(), content_type.clone());
        }
        if let Some(filename) = &meta.filename {
            metadata.insert("filename".to_string(), filename.clone());
        }
        let object_meta = object_store::ObjectMetadata {
            name: encode_name(name),
            metadata,
            ..Default::default()
        };
        let mut reader: &[u8] = &bytes;
        self.objects.put(object_meta, &mut reader).await.map_err(|e| MediaError::Unavailable(e.to_string()))?;
        Ok(())
    }

    /// Removes the file stored under `name` (its chunks are purged from the object store);
    /// removing a missing file is not an error.
    pub async fn delete(&self, name: &str) -> Result<(), MediaError> {
        match self.objects.delete(encode_name(name)).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
            Err(error) => Err(MediaError::Unavailable(error.to_string())),
        }
    }

    /// Whether a file is stored under `name` (its description only, not its bytes).
    pub async fn exists(&self, name: &str) -> Result<bool, MediaError> {
        match self.objects.info(encode_name(name)).await {
            Ok(info) => Ok(!info.deleted),
            Err(error) if error.kind() == object_store::InfoErrorKind::NotFound => Ok(false),
            Err(error) => Err(MediaError::Unavailable(error.to_string())),
        }
    }

    /// The file stored under `name`, or `None`.
    pub async fn get(&self, name: &str) -> Result<Option<(Bytes, MediaMeta)>, MediaError> {
        let mut object = match self.objects.get(encode_name(name)).await {
            Ok(object) => object,
            Err(error) if error.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(MediaError::Unavailable(error.to_string())),
        };
        let info = object.info().clone();
        let mut data = Vec::with_capacity(info.size);
        object.read_to_end(&mut data).await.map_err(|e| MediaError::Unavailable(e.to_string()))?;
        let meta = MediaMeta {
            content_type: info.metadata.get("content_type").cloned(),
            filename: info.metadata.get("filename").cloned(),
        };
        Ok(Some((Bytes::from(data), meta)))
    }
}
