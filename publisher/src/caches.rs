//! The watch-fed caches both halves start the same way: one spawned task per watch, each
//! object stripped (see `hostport_api::cache`) or, for claims and pods, compacted
//! (`crate::published`) before it is stored, a change counter bumped after every event.

use std::sync::Arc;

use hostport_api::HostPortClass;
use hostport_api::cache::{POD_LIST_PAGE, strip_metadata};
use hostport_process::compact::{Compact, CompactStore};
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::claimed::Inputs;
use crate::published::{PublishedClaim, PublishedPod};

/// A watch-fed cache of the `K`s `config` selects (stored `strip`ped; `changes` bumped after
/// each event), its feeding task pushed on `tasks`.
pub fn spawn_cache<K>(
    client: &Client,
    config: watcher::Config,
    strip: fn(&mut K),
    changes: &watch::Sender<u64>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Store<K>
where
    K: hostport_process::Watched,
{
    let (store, feed) =
        hostport_process::watched_cache(Api::all(client.clone()), config, strip, changes.clone());
    tasks.push(tokio::spawn(feed));
    store
}

/// A watch-fed cache of compact `C`s of what `config` selects (`changes` bumped after each
/// event), its feeding task pushed on `tasks`.
fn spawn_compact_cache<C: Compact>(
    client: &Client,
    config: watcher::Config,
    changes: &watch::Sender<u64>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> CompactStore<C> {
    let (store, feed) =
        hostport_process::compact::compact_cache(Api::all(client.clone()), config, changes.clone());
    tasks.push(tokio::spawn(feed));
    store
}

/// The caches both halves read: classes, claims, and pods (only one node's when set).
#[derive(Clone, Debug)]
pub struct ClaimCaches {
    /// Every class.
    pub classes: Store<HostPortClass>,
    /// Every claim.
    pub claims: CompactStore<PublishedClaim>,
    /// Every pod, or one node's.
    pub pods: CompactStore<PublishedPod>,
}

/// What [`ClaimCaches`] hold at one moment, for one pass.
#[derive(Clone, Debug)]
pub struct Snapshot {
    classes: Vec<Arc<HostPortClass>>,
    claims: Vec<Arc<PublishedClaim>>,
    pods: Vec<Arc<PublishedPod>>,
}

impl Snapshot {
    /// The caches' objects as the pure rules read them.
    pub fn inputs(&self) -> Inputs<'_> {
        Inputs {
            classes: &self.classes,
            claims: &self.claims,
            pods: &self.pods,
        }
    }
}

impl ClaimCaches {
    /// Starts the three watches (pods only of node `node` when set), their feeding tasks
    /// pushed on `tasks`.
    pub fn spawn(
        client: &Client,
        node: Option<&str>,
        changes: &watch::Sender<u64>,
        tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> Self {
        let classes = spawn_cache(
            client,
            watcher::Config::default(),
            strip_metadata::<HostPortClass>,
            changes,
            tasks,
        );
        let claims = spawn_compact_cache(client, watcher::Config::default(), changes, tasks);
        // Big pods arrive in small pages, each stripped before the next.
        let pod_config = match node {
            Some(node) => watcher::Config::default().fields(&format!("spec.nodeName={node}")),
            None => watcher::Config::default(),
        }
        .page_size(POD_LIST_PAGE);
        let pods = spawn_compact_cache(client, pod_config, changes, tasks);
        Self {
            classes,
            claims,
            pods,
        }
    }

    /// Returns once each cache holds its first complete list.
    pub async fn wait_until_ready(&self) {
        let _ = self.classes.wait_until_ready().await;
        let _ = self.claims.wait_until_ready().await;
        let _ = self.pods.wait_until_ready().await;
    }

    /// What they hold now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            classes: self.classes.state(),
            claims: self.claims.all(),
            pods: self.pods.all(),
        }
    }
}
