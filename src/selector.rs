//! Label selectors evaluated in memory, as the API server would: `matchLabels` and
//! `matchExpressions` (`In`, `NotIn`, `Exists`, `DoesNotExist`) all have to hold. An empty
//! selector matches everything.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let listed = |v: &String| e.values.iter().flatten().any(|x| x == v);
        match e.operator.as_str() {
            "In" => value.is_some_and(listed),
            "NotIn" => !value.is_some_and(listed),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // Unknown operators match nothing (the API server refuses them anyway).
            _ => false,
        }
    });
    by_label && by_expression
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(matches(&LabelSelector::default(), &labels(&[])));
        assert!(matches(&LabelSelector::default(), &labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_must_all_hold() {
        let s = LabelSelector {
            match_labels: Some(labels(&[("app", "cam"), ("tier", "canary")])),
            ..Default::default()
        };
        assert!(matches(
            &s,
            &labels(&[("app", "cam"), ("tier", "canary"), ("x", "y")])
        ));
        assert!(!matches(&s, &labels(&[("app", "cam")])));
        assert!(!matches(&s, &labels(&[("app", "cam"), ("tier", "stable")])));
    }

    #[test]
    fn expressions() {
        let l = labels(&[("zone", "a"), ("canary", "true")]);
        let with = |e| LabelSelector {
            match_expressions: Some(vec![e]),
            ..Default::default()
        };
        assert!(matches(&with(expr("zone", "In", &["a", "b"])), &l));
        assert!(!matches(&with(expr("zone", "In", &["c"])), &l));
        assert!(!matches(&with(expr("missing", "In", &["a"])), &l));
        assert!(matches(&with(expr("zone", "NotIn", &["c"])), &l));
        assert!(!matches(&with(expr("zone", "NotIn", &["a"])), &l));
        assert!(matches(&with(expr("missing", "NotIn", &["a"])), &l));
        assert!(matches(&with(expr("canary", "Exists", &[])), &l));
        assert!(!matches(&with(expr("canary", "DoesNotExist", &[])), &l));
        assert!(matches(&with(expr("missing", "DoesNotExist", &[])), &l));
        assert!(!matches(&with(expr("zone", "Bogus", &[])), &l));
    }
}
