//! Kubernetes label selectors: `matchLabels` AND `matchExpressions` (In, NotIn, Exists, DoesNotExist).
//! An empty selector matches everything; `NotIn` and `DoesNotExist` match when the key is absent.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A validated selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Validates `selector` as the apiserver would: known operators, values for In/NotIn, none for
    /// Exists/DoesNotExist. The error says what is wrong.
    pub(crate) fn parse(selector: &LabelSelector) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for e in selector.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let key = e.key.clone();
            let requirement = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!("matchExpressions {key} {} needs values", e.operator));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!("matchExpressions {key} {} takes no values", e.operator));
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => return Err(format!("matchExpressions {key}: unknown operator {other:?}")),
            };
            requirements.push(requirement);
        }
        Ok(Selector { requirements })
    }

    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_by(|k| labels.get(k).map(String::as_str))
    }

    /// Matches the labels `get` returns (a label's value by key).
    pub(crate) fn matches_by<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, values) => get(k).is_some_and(|v| values.iter().any(|x| x == v)),
            Requirement::NotIn(k, values) => get(k).is_none_or(|v| !values.iter().any(|x| x == v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }

    /// Short text for rule descriptions: `{}` or `app=web,tier in (a,b)`.
    pub(crate) fn describe(&self) -> String {
        if self.requirements.is_empty() {
            return "{}".into();
        }
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::In(k, v) if v.len() == 1 => format!("{k}={}", v[0]),
                Requirement::In(k, v) => format!("{k} in ({})", v.join(",")),
                Requirement::NotIn(k, v) => format!("{k} notin ({})", v.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect();
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> Selector {
        let values = if values.is_empty() { None } else { Some(values.iter().map(|v| v.to_string()).collect()) };
        let sel = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values,
            }]),
            match_labels: None,
        };
        Selector::parse(&sel).unwrap()
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = Selector::parse(&LabelSelector::default()).unwrap();
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("pod", "a")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "Exists".into(),
                values: None,
            }]),
        };
        let s = Selector::parse(&sel).unwrap();
        assert!(s.matches(&labels(&[("pod", "a"), ("tier", "x")])));
        assert!(!s.matches(&labels(&[("pod", "a")])));
        assert!(!s.matches(&labels(&[("pod", "b"), ("tier", "x")])));
    }

    #[test]
    fn each_operator() {
        let in_ = expr("pod", "In", &["a", "b"]);
        assert!(in_.matches(&labels(&[("pod", "b")])));
        assert!(!in_.matches(&labels(&[("pod", "c")])));
        assert!(!in_.matches(&labels(&[])));
        let not_in = expr("pod", "NotIn", &["a", "b"]);
        assert!(!not_in.matches(&labels(&[("pod", "a")])));
        assert!(not_in.matches(&labels(&[("pod", "c")])));
        assert!(not_in.matches(&labels(&[])), "NotIn matches an absent key");
        let exists = expr("pod", "Exists", &[]);
        assert!(exists.matches(&labels(&[("pod", "")])));
        assert!(!exists.matches(&labels(&[])));
        let dne = expr("pod", "DoesNotExist", &[]);
        assert!(dne.matches(&labels(&[])));
        assert!(!dne.matches(&labels(&[("pod", "a")])));
    }

    #[test]
    fn invalid_selectors_are_refused() {
        for (op, values) in [("Foo", vec!["a"]), ("In", vec![]), ("NotIn", vec![]), ("Exists", vec!["a"])] {
            let sel = LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "k".into(),
                    operator: op.into(),
                    values: Some(values.into_iter().map(String::from).collect()),
                }]),
                match_labels: None,
            };
            assert!(Selector::parse(&sel).is_err(), "{op}");
        }
    }
}
