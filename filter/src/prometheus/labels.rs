//! Prometheus label names and values as they appear in the text exposition format.

/// Why a label name cannot be injected, or `Ok` when it can.
///
/// Injected names must be classic Prometheus names (`[a-zA-Z_][a-zA-Z0-9_]*`) so every
/// scraper understands them unquoted; `__`-prefixed names are reserved for Prometheus
/// itself and `namespace` is the key we read, so injecting it would be a conflict on
/// every series.
pub fn check_injectable_name(name: &str) -> Result<(), &'static str> {
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err("is empty");
    };
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return Err("is not a valid Prometheus label name (must start with a letter or '_')");
    }
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err("is not a valid Prometheus label name (only [a-zA-Z0-9_] allowed)");
    }
    if name.starts_with("__") {
        return Err("is reserved for Prometheus' internal use ('__' prefix)");
    }
    if name == "namespace" {
        return Err("would replace the namespace label the filter reads");
    }
    Ok(())
}

/// The conventional Prometheus spelling of a Kubernetes label key, as
/// kube-state-metrics writes it: every character outside `[a-zA-Z0-9_]` becomes `_`,
/// and a leading digit gets a `_` prefix (`app.kubernetes.io/team` →
/// `app_kubernetes_io_team`). Used for the hint in config errors and by
/// `kubelet-scope label-name`.
pub fn sanitize_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 1);
    if key.starts_with(|c: char| c.is_ascii_digit()) || key.is_empty() {
        out.push('_');
    }
    out.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    out
}

/// Appends `value` escaped for a label value in the text format: `\` → `\\`,
/// `"` → `\"`, newline → `\n`.
pub fn escape_value_into(value: &str, out: &mut Vec<u8>) {
    for &b in value.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injectable_names() {
        for ok in ["team", "_x", "cost_centre2", "Team"] {
            assert_eq!(check_injectable_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "2x", "a-b", "a.b", "__name", "namespace", "ü"] {
            assert!(check_injectable_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sanitized_names_are_injectable_or_reserved() {
        assert_eq!(
            sanitize_name("app.kubernetes.io/team"),
            "app_kubernetes_io_team"
        );
        assert_eq!(sanitize_name("1st"), "_1st");
        assert_eq!(sanitize_name("équipe"), "_quipe");
        assert_eq!(check_injectable_name(&sanitize_name("a/b.c-d")), Ok(()));
    }

    #[test]
    fn values_are_escaped() {
        let mut out = Vec::new();
        escape_value_into("a\\b\"c\nd}e,f", &mut out);
        assert_eq!(out, br#"a\\b\"c\nd}e,f"#);
    }
}
