//! Kubernetes Events (`events.k8s.io/v1`) about claims and classes.
//!
//! kube-runtime's `Recorder` keeps every Event of the last six minutes to aggregate repeats
//! into series; at ten thousand bindings that cache dominates memory and each publish scans
//! it. The reconcilers here publish only on transitions (never the same Event twice in a
//! row), so a plain create is enough.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, Resource};

/// Longest object name (DNS-1123 subdomain).
const MAX_NAME: usize = 253;

/// `<object>.<nanoseconds in hex>`, as client-go names Events, with the object's name cut
/// so the whole stays a valid name for objects named up to the 253-character limit.
fn event_name(object: &str, nanos: i128) -> String {
    let suffix = format!(".{nanos:x}");
    let room = MAX_NAME.saturating_sub(suffix.len());
    // Names are ASCII; a cut must not end on '.' or '-' (the suffix starts with '.').
    let mut cut = &object[..object.len().min(room)];
    cut = cut.trim_end_matches(['.', '-']);
    format!("{cut}{suffix}")
}

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened (bound, released).
    Normal,
    /// Something needs attention (pool exhausted, class missing).
    Warning,
}

/// Records Events as one controller instance (what kube-runtime calls a `Recorder`, without
/// its series cache: see the module header).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("controller", &self.controller)
            .field("instance", &self.instance)
            .finish()
    }
}

impl Recorder {
    /// Events reported by `controller` (e.g. `hostport-controller`) from `instance` (pod name).
    pub fn new(client: Client, controller: String, instance: String) -> Self {
        Self {
            client,
            controller,
            instance,
        }
    }

    /// Publishes one Event about `object`; a failure is logged, never fatal.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let regarding: ObjectReference = object.object_ref(&());
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let now = k8s_openapi::jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                // Unique per object and moment, as client-go names Events.
                name: Some(event_name(
                    regarding.name.as_deref().unwrap_or("object"),
                    now.as_nanosecond(),
                )),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(note.chars().take(1024).collect()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(match type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            ..Event::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(error) = events.create(&PostParams::default(), &event).await {
            tracing::warn!(%error, reason, "publishing an Event failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_stay_valid_for_any_legal_object_name() {
        let nanos = k8s_openapi::jiff::Timestamp::now().as_nanosecond();
        for object in [
            "web".to_owned(),
            "a".repeat(253),
            format!("{}-{}", "a".repeat(240), "b".repeat(12)),
            format!("{}.x", "a".repeat(250)),
        ] {
            let name = event_name(&object, nanos);
            assert_eq!(
                hostport_api::names::validate_dns1123_subdomain(&name),
                Ok(()),
                "{name}"
            );
        }
        assert_eq!(event_name("web", 255), "web.ff");
    }
}
