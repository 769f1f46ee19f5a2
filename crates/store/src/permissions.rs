//! What a haetae node may do on a deployment's NATS: least privilege, derived from the names this
//! crate owns.
//!
//! A node may append to and read its event-log partitions, read and write its KV buckets and
//! object stores, fan out on its ephemeral subject, and make the JetStream API calls those need:
//! stream info and create (startup creates a missing asset; creating one that exists with other
//! settings fails, it changes nothing), message and direct gets, and its own ephemeral
//! consumers. It may not update, delete or purge a stream (purging is allowed on the object
//! stores only, where replacing an object purges its old chunks), touch any other stream, list
//! streams, or read any subject outside haetae's and its own inbox. Changing an asset's settings
//! (replicas, the dedup window) is the admin user's: start one node with the admin credential. Every other right (step-downs, stream deletion, the benchmark's probe
//! streams) belongs to the operator's admin user.
//!
//! Never talks to NATS: nats-server enforces what this module lists.

use crate::kv::Bucket;
use crate::launcher::Permissions;

/// The inbox prefix of a node's connection: its replies arrive under `<prefix>.>`, which only it
/// may subscribe to (one node cannot read another's replies).
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// Every JetStream stream haetae keeps, with the subjects a node publishes into it.
pub(crate) fn streams(partitions: u32) -> Vec<(String, Vec<String>, bool)> {
    let mut streams = Vec::new();
    for partition in 0..partitions {
        streams.push((
            crate::log::stream_name(partition),
            vec![format!("{}.{partition}.>", crate::log::SUBJECT_ROOT)],
            false,
        ));
    }
    for bucket in Bucket::ALL {
        streams.push((format!("KV_{}", bucket.name()), vec![format!("$KV.{}.>", bucket.name())], false));
    }
    for bucket in [crate::media::BUCKET, crate::snapshots::BUCKET] {
        // Object stores: replacing an object purges the old one's chunks.
        streams.push((format!("OBJ_{bucket}"), vec![format!("$O.{bucket}.>")], true));
    }
    streams
}

/// The permissions of the NATS user a node of a deployment with `partitions` event-log
/// partitions connects as.
pub fn node_permissions(user: &str, partitions: u32) -> Permissions {
    let mut publish = vec![crate::ephemeral::SUBJECT.to_string(), "$JS.API.INFO".to_string()];
    for (stream, subjects, purgeable) in streams(partitions) {
        publish.extend(subjects);
        for call in ["STREAM.INFO", "STREAM.CREATE", "STREAM.MSG.GET", "DIRECT.GET", "CONSUMER.CREATE"] {
            publish.push(format!("$JS.API.{call}.{stream}"));
        }
        // Calls whose subject continues after the stream: by-subject direct gets, a named
        // consumer's create, its next-message requests, info and deletion (of its own
        // ephemeral consumers: they are recreated after a leader change).
        for call in ["DIRECT.GET", "CONSUMER.CREATE", "CONSUMER.MSG.NEXT", "CONSUMER.INFO", "CONSUMER.DELETE"] {
            publish.push(format!("$JS.API.{call}.{stream}.>"));
        }
        // Flow-control replies of the push consumers that read objects and watch buckets.
        publish.push(format!("$JS.FC.{stream}.>"));
        if purgeable {
            publish.push(format!("$JS.API.STREAM.PURGE.{stream}"));
        }
    }
    let subscribe = vec![crate::ephemeral::SUBJECT.to_string(), format!("{}.>", inbox_prefix(user))];
    Permissions { publish, subscribe }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_may_not_delete_or_purge_the_log() {
        let permissions = node_permissions("node-a", 3);
        let publish = &permissions.publish;
        assert!(publish.contains(&"haetae.log.2.>".to_string()));
        assert!(publish.contains(&"$JS.API.STREAM.CREATE.HAETAE_LOG_0".to_string()));
        assert!(!publish.iter().any(|s| s.starts_with("$JS.API.STREAM.DELETE")), "{publish:?}");
        assert!(!publish.iter().any(|s| s.starts_with("$JS.API.STREAM.UPDATE")), "{publish:?}");
        assert!(publish.contains(&"$JS.API.CONSUMER.DELETE.HAETAE_LOG_0.>".to_string()), "its own consumers only");
        assert!(!publish.iter().any(|s| s.contains("PURGE.HAETAE_LOG") || s.contains("PURGE.KV_")), "{publish:?}");
        assert!(!publish.iter().any(|s| s.starts_with("$JS.API.STREAM.NAMES") || s == "$JS.API.>" || s == ">"));
        assert_eq!(permissions.subscribe, vec!["haetae.ephemeral".to_string(), "_INBOX_node-a.>".to_string()]);
    }
}
