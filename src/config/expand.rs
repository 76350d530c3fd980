//! `${name}` in collector paths and arguments, from the site's `[vars]`.

use std::collections::BTreeMap;

/// `${name}` substitution; `$$` is a literal dollar.
pub fn expand_vars(input: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r.find('}').ok_or_else(|| format!("unclosed `${{` in `{input}`"))?;
            let name = &r[..end];
            let value = vars.get(name).ok_or_else(|| {
                format!(
                    "unknown variable `${{{name}}}` (known: {})",
                    vars.keys().cloned().collect::<Vec<_>>().join(", ")
                )
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
        assert!(expand_vars("${nope}/x", &vars).unwrap_err().contains("${nope}"));
    }
}
