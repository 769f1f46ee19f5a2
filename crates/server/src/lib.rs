//! The haetae homeserver node: the Matrix Client-Server API over the store.
//!
//! - [`config`]: what a node can be told.
//! - [`entry`]: the meaning of event-log entries (the stored format).
//! - [`read_model`]: the node's in-memory view, rebuilt from the log and kept current by tailing it.
//! - [`services`]: what requests do (accounts, rooms, sync, keys, media, ...) over the store and
//!   the read model, which only services reach; the workers that keep the model current.
//! - [`app`]: request plumbing (the caller extractor, JSON bodies).
//! - [`api`]: the HTTP endpoints, one file per group; each handler calls services.
//! - [`http_server`]: accepting connections (header and body read timeouts, connections per IP).
//! - [`oauth`]: the OAuth 2.0 login provider (Matrix OAuth API, login pages), its own router.
//! - [`refresh_chain`]: the rules of rotating refresh tokens, shared by OAuth and password logins.
//!
//! A node is stateless apart from its read model: start one with an empty directory and it serves
//! exactly the same data. It never talks to NATS except through `haetae_store`.

pub mod api;
pub mod app;
pub mod bounded;
pub mod config;
pub mod entry;
pub mod error;
pub mod html;
pub mod http_server;
pub mod oauth;
pub mod read_model;
pub mod refresh_chain;
pub mod services;

use std::sync::Arc;
use std::time::Duration;

use haetae_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use config::ServerConfig;

use crate::services::{App, AppState};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read the event log: {0}")]
    Log(String),
    #[error("the read model did not catch up with the event log within {0:?}")]
    CatchUp(Duration),
}

/// A running node: the shared app and its background workers (stopped when dropped).
pub struct Node {
    pub app: AppState,
    workers: JoinSet<()>,
}

/// How long a stopping node may spend leaving a snapshot behind.
const SHUTDOWN_SNAPSHOT_DEADLINE: Duration = Duration::from_secs(10);

/// How long start-up may take to replay the log.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);

impl Node {
    /// Builds the read model from the log and starts the workers that keep it current.
    /// Returns once the model has applied everything the log held at start.
    pub async fn start(store: Store, config: ServerConfig) -> Result<Node, StartError> {
        let node = config
            .node_name
            .clone()
            .unwrap_or_else(|| services::rooms::random_string(6));
        let app = Arc::new(App::new(store, config, node));
        let mut workers = JoinSet::new();
        services::follower::start(&app, &mut workers, CATCH_UP_TIMEOUT).await?;
        Ok(Node { app, workers })
    }

    /// Serves HTTP on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = api::router(self.app.clone());
        let config = &self.app.config;
        let limits = http_server::ConnectionLimits {
            header_read_timeout: Duration::from_millis(config.limits.header_read_timeout_ms.max(1)),
            body_read_timeout: Duration::from_millis(config.limits.body_read_timeout_ms.max(1)),
            connections_per_ip: config
                .rate_limits
                .enabled
                .then_some(config.rate_limits.connections_per_ip),
        };
        let result = http_server::serve(listener, router, limits, shutdown).await;
        drop(self.workers);
        // A node stopped on purpose (rolling restart, upgrade) leaves a current snapshot, so the
        // next start replays almost nothing.
        if tokio::time::timeout(
            SHUTDOWN_SNAPSHOT_DEADLINE,
            services::follower::write_snapshot_if_behind(&self.app),
        )
        .await
        .is_err()
        {
            tracing::warn!(
                "no snapshot written on the way out: the snapshot store did not answer in time"
            );
        }
        result
    }
}

/// Starts a node and serves until `shutdown`: the whole server in one call.
pub async fn run(
    listener: TcpListener,
    store: Store,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let node = Node::start(store, config).await?;
    node.serve(listener, shutdown).await?;
    Ok(())
}
