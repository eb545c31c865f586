//! The finalizer's JSON patches: one shape for the controller's writes and the webhook's
//! defaulting. Each is guarded by a `test` of what it was computed from, so a concurrent
//! change makes the patch fail (422) instead of being overwritten.

use serde_json::{Value, json};

use crate::FINALIZER;

/// Operations that add our finalizer to an object whose finalizers are `current` (`None`: the
/// field is absent), guarded by a test of `current`; `None` when it is there already.
pub fn add_patch(current: Option<&[String]>) -> Option<Value> {
    let add = add_operation(current)?;
    let tested = current.map_or(Value::Null, |list| json!(list));
    Some(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": tested},
        add,
    ]))
}

/// The one operation that adds our finalizer, unguarded: for an admission patch, which
/// applies to the very object it was computed from. `None` when it is there already.
pub fn add_operation(current: Option<&[String]>) -> Option<Value> {
    match current {
        Some(list) if list.iter().any(|f| f == FINALIZER) => None,
        None | Some([]) => Some(json!(
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
        )),
        Some(_) => Some(json!(
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}
        )),
    }
}

/// Operations that remove our finalizer from `current`; `None` when it is not there.
pub fn remove_patch(current: &[String]) -> Option<Value> {
    let index = current.iter().position(|f| f == FINALIZER)?;
    let path = format!("/metadata/finalizers/{index}");
    Some(json!([
        {"op": "test", "path": path, "value": FINALIZER},
        {"op": "remove", "path": path},
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn adds_to_an_absent_empty_or_other_list_once() {
        let absent = add_patch(None).expect("patch");
        assert_eq!(absent[0]["value"], Value::Null);
        assert_eq!(absent[1]["value"], json!([FINALIZER]));
        let empty = add_patch(Some(&[])).expect("patch");
        assert_eq!(empty[0]["value"], json!([]));
        let other = add_patch(Some(&list(&["other"]))).expect("patch");
        assert_eq!(other[0]["value"], json!(["other"]));
        assert_eq!(other[1]["path"], "/metadata/finalizers/-");
        assert_eq!(add_patch(Some(&list(&["other", FINALIZER]))), None);
    }

    #[test]
    fn removes_by_position_guarded_by_its_value() {
        let patch = remove_patch(&list(&["other", FINALIZER])).expect("patch");
        assert_eq!(
            patch[0],
            json!({"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER})
        );
        assert_eq!(
            patch[1],
            json!({"op": "remove", "path": "/metadata/finalizers/1"})
        );
        assert_eq!(remove_patch(&list(&["other"])), None);
    }
}
