//! The watch-fed caches both halves start the same way: one spawned task per watch, each
//! object stripped (see `hostport_api::cache`) before it is stored, a change counter bumped
//! after every event.

use hostport_api::cache::{POD_LIST_PAGE, strip_claim, strip_metadata, strip_pod};
use hostport_api::{HostPortClaim, HostPortClass};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::watch;

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

/// The caches every mode reads: classes, claims, and pods (only node `node`'s when set),
/// each fed by a watch whose task is pushed on `tasks`.
pub fn claim_caches(
    client: &Client,
    node: Option<&str>,
    changes: &watch::Sender<u64>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> (Store<HostPortClass>, Store<HostPortClaim>, Store<Pod>) {
    let classes = spawn_cache(
        client,
        watcher::Config::default(),
        strip_metadata::<HostPortClass>,
        changes,
        tasks,
    );
    // Claims keep their status: router mode rewrites only its own part of it.
    let claims = spawn_cache(
        client,
        watcher::Config::default(),
        strip_claim,
        changes,
        tasks,
    );
    // Big pods arrive in small pages, each stripped before the next.
    let pod_config = match node {
        Some(node) => watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        None => watcher::Config::default(),
    }
    .page_size(POD_LIST_PAGE);
    let pods = spawn_cache(client, pod_config, strip_pod, changes, tasks);
    (classes, claims, pods)
}
