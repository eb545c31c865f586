//! Namespaces: the label kube-apiserver gives each one, and the namespace controller's part
//! (a terminating namespace is emptied, and goes once its last object has).

use crate::db::State;
use crate::object::{is_deleting, object_key};
use crate::registry::ResourceType;
use crate::store::ObjectKey;
use crate::verbs::delete_object;

/// The namespace controller's job: delete everything in a terminating namespace.
pub(crate) fn empty_namespace(state: &mut State, namespace: &str) {
    let namespaced: Vec<ResourceType> = state
        .registry
        .all()
        .filter(|t| t.namespaced)
        .cloned()
        .collect();
    for rt in namespaced {
        let keys: Vec<ObjectKey> = state
            .store
            .list(&rt.key(), Some(namespace))
            .iter()
            .map(|o| object_key(o))
            .collect();
        for key in keys {
            delete_object(state, &rt, &key);
        }
    }
    remove_namespace_if_done(state, namespace);
}

pub(crate) fn remove_namespace_if_done(state: &mut State, namespace: &str) {
    let ns_key = (String::new(), "namespaces".to_owned());
    let object_key = (String::new(), namespace.to_owned());
    let terminating = state
        .store
        .get(&ns_key, &object_key)
        .is_some_and(|ns| is_deleting(&ns));
    if terminating && state.store.count_in_namespace(namespace) == 0 {
        state.store.remove(&ns_key, &object_key);
    }
}

/// The label kube-apiserver sets on every namespace (and restores if removed), so namespace
/// selectors can pick one by name.
pub(crate) const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Sets [`NAME_LABEL`] to the namespace's name.
pub(crate) fn label_with_name(namespace: &mut serde_json::Value) {
    let name = namespace["metadata"]["name"].clone();
    if !namespace["metadata"]["labels"].is_object() {
        namespace["metadata"]["labels"] = serde_json::json!({});
    }
    namespace["metadata"]["labels"][NAME_LABEL] = name;
}
