//! `${name}` in collector paths and arguments, from the site's `[vars]`.

use std::collections::BTreeMap;

/// Why a text could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("unclosed `${{` in `{input}`")]
    Unclosed { input: String },
    #[error("unknown variable `${{{name}}}` (known: {})", .known.join(", "))]
    UnknownVariable { name: String, known: Vec<String> },
}

/// `${name}` substitution; `$$` is a literal dollar.
pub fn expand_vars(input: &str, vars: &BTreeMap<String, String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r.find('}').ok_or_else(|| ExpandError::Unclosed { input: input.to_string() })?;
            let name = &r[..end];
            let value = vars.get(name).ok_or_else(|| ExpandError::UnknownVariable {
                name: name.to_string(),
                known: vars.keys().cloned().collect(),
            })?;
            out.push_str(value);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_expand_and_unknown_is_named() {
        let vars = BTreeMap::from([("home".to_string(), "/h".to_string())]);
        assert_eq!(expand_vars("${home}/x/$$y", &vars).unwrap(), "/h/x/$y");
        assert!(expand_vars("${nope}/x", &vars).unwrap_err().to_string().contains("${nope}"));
    }
}
