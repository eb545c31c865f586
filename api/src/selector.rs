//! Label selectors as Kubernetes writes them (`metav1.LabelSelector`), with the matching both
//! binaries apply: a class's `namespaceSelector` against a Namespace's labels.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Selects objects by their labels: every `matchLabels` pair and every `matchExpressions`
/// requirement must hold. An empty selector selects everything.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("additionalProperties" = {"type": "string", "description": "The value the label must have."}))]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements on labels (`In`, `NotIn`, `Exists`, `DoesNotExist`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One requirement on a label.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)"
).message("values must list at least one value for In and NotIn, and be empty for Exists and DoesNotExist"))]
pub struct LabelSelectorRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// How the label's value relates to `values`.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn` (at least one); empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "string", "description": "A label value."}))]
    pub values: Vec<String>,
}

/// A label selector operator.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent, or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector (as `metav1.LabelSelectorAsSelector` would).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self.match_expressions.iter().all(|requirement| {
                let value = labels.get(&requirement.key);
                let listed = value.is_some_and(|v| requirement.values.contains(v));
                match requirement.operator {
                    SelectorOperator::In => listed,
                    SelectorOperator::NotIn => !listed,
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// `team=a, tier in (x, y)`: the selector as messages show it.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        parts.extend(self.match_expressions.iter().map(|r| match r.operator {
            SelectorOperator::In => format!("{} in ({})", r.key, r.values.join(", ")),
            SelectorOperator::NotIn => format!("{} notin ({})", r.key, r.values.join(", ")),
            SelectorOperator::Exists => r.key.clone(),
            SelectorOperator::DoesNotExist => format!("!{}", r.key),
        }));
        if parts.is_empty() {
            "every namespace".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn requirement(
        key: &str,
        operator: SelectorOperator,
        values: &[&str],
    ) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let selector = LabelSelector {
            match_labels: labels(&[("team", "a")]),
            match_expressions: vec![
                requirement("tier", SelectorOperator::In, &["x", "y"]),
                requirement("frozen", SelectorOperator::DoesNotExist, &[]),
            ],
        };
        assert!(selector.matches(&labels(&[("team", "a"), ("tier", "x")])));
        assert!(!selector.matches(&labels(&[("team", "b"), ("tier", "x")])));
        assert!(!selector.matches(&labels(&[("team", "a"), ("tier", "z")])));
        assert!(!selector.matches(&labels(&[("team", "a"), ("tier", "x"), ("frozen", "")])));
        assert_eq!(selector.describe(), "team=a, tier in (x, y), !frozen");
    }

    #[test]
    fn not_in_and_exists_and_the_empty_selector() {
        let not_in = LabelSelector {
            match_expressions: vec![requirement("env", SelectorOperator::NotIn, &["prod"])],
            ..LabelSelector::default()
        };
        assert!(not_in.matches(&labels(&[])));
        assert!(not_in.matches(&labels(&[("env", "dev")])));
        assert!(!not_in.matches(&labels(&[("env", "prod")])));
        let exists = LabelSelector {
            match_expressions: vec![requirement("env", SelectorOperator::Exists, &[])],
            ..LabelSelector::default()
        };
        assert!(exists.matches(&labels(&[("env", "")])));
        assert!(!exists.matches(&labels(&[])));
        assert!(LabelSelector::default().matches(&labels(&[])));
    }
}
