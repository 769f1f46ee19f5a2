//! Local multi-DC deployments of haetae, and the faults a fire drill injects into them.
//!
//! - [`deployment`]: per DC one nats-server and one haetae node; start, stop gracefully, kill
//!   (with or without burning the disks), rebuild, cut off and heal; the state file.
//! - [`deploy`]: the files of a deployment on real hosts (per DC configs, certificates,
//!   credentials, systemd units), what `haetae deploy` writes.
//! - [`netns`]: one network namespace per DC, so a DC can be cut off as well as killed.
//! - [`status`]: what `haetae cluster status` prints: DCs, processes, and where every replica
//!   and leader sits.
//! - [`supervisor`]: what `haetae cluster up` runs once the deployment stands: the only party
//!   that kills, deletes and restarts a DC (fire requests, crashed processes, stuck replicas),
//!   stoppable within seconds in every state.
//!
//! Knows NATS only through `haetae_store` (the launcher and the admin view).

pub mod deploy;
pub mod deployment;
pub mod netns;
pub mod status;
pub mod supervisor;

pub use deployment::{ClusterError, DcPlan, Deployment, DeploymentSpec, Phase, State};
