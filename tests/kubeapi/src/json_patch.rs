//! RFC 6902 JSON Patch, as mutating webhooks return it: `add`, `remove`,
//! `replace`, `test`, `copy` and `move` on JSON pointers (RFC 6901).

use serde_json::Value;

/// Why a patch does not apply.
#[derive(Debug, thiserror::Error)]
#[error("json patch: {0}")]
pub struct PatchError(String);

fn err(m: impl Into<String>) -> PatchError {
    PatchError(m.into())
}

fn tokens(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(vec![]);
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| err(format!("pointer {pointer:?} must start with /")))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for t in path {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| err(format!("path element {t:?} does not exist")))?;
    }
    Ok(cur)
}

fn get(doc: &Value, pointer: &str) -> Result<Value, PatchError> {
    doc.pointer(pointer)
        .cloned()
        .ok_or_else(|| err(format!("{pointer:?} does not exist")))
}

fn add(doc: &mut Value, pointer: &str, value: Value) -> Result<(), PatchError> {
    let mut path = tokens(pointer)?;
    let Some(last) = path.pop() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, &path)? {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| err(format!("bad array index {last:?}")))?
            };
            a.insert(i, value);
        }
        _ => return Err(err(format!("{pointer:?}: parent is not a container"))),
    }
    Ok(())
}

fn remove(doc: &mut Value, pointer: &str) -> Result<Value, PatchError> {
    let mut path = tokens(pointer)?;
    let last = path.pop().ok_or_else(|| err("cannot remove the root"))?;
    match parent(doc, &path)? {
        Value::Object(m) => m.remove(&last),
        Value::Array(a) => last
            .parse::<usize>()
            .ok()
            .filter(|i| *i < a.len())
            .map(|i| a.remove(i)),
        _ => None,
    }
    .ok_or_else(|| err(format!("{pointer:?} does not exist")))
}

/// Applies `patch` (an array of operations) to `doc`, all or nothing.
pub fn apply(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| err("a patch is an array of operations"))?;
    let mut work = doc.clone();
    for op in ops {
        let field = |k: &str| {
            op.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| err(format!("operation without {k:?}: {op}")))
        };
        let path = field("path")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| err("operation without value"))
        };
        match field("op")? {
            "add" => add(&mut work, path, value()?)?,
            "remove" => {
                remove(&mut work, path)?;
            }
            "replace" => {
                remove(&mut work, path)?;
                add(&mut work, path, value()?)?;
            }
            "test" => {
                if get(&work, path)? != value()? {
                    return Err(err(format!("test failed at {path:?}")));
                }
            }
            "copy" => {
                let v = get(&work, field("from")?)?;
                add(&mut work, path, v)?;
            }
            "move" => {
                let v = remove(&mut work, field("from")?)?;
                add(&mut work, path, v)?;
            }
            other => return Err(err(format!("unknown operation {other:?}"))),
        }
    }
    *doc = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operations_apply_in_order_and_escape_pointers() {
        let mut doc = json!({"metadata": {"annotations": {"a": "1"}}, "spec": {"volumes": [1]}});
        apply(
            &mut doc,
            &json!([
                {"op": "add", "path": "/metadata/annotations/kcred.io~1x", "value": "y"},
                {"op": "replace", "path": "/metadata/annotations/a", "value": "2"},
                {"op": "add", "path": "/spec/volumes/-", "value": 2},
                {"op": "test", "path": "/spec/volumes/1", "value": 2},
                {"op": "move", "from": "/spec/volumes/0", "path": "/spec/first"},
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"annotations": {"a": "2", "kcred.io/x": "y"}}, "spec": {"volumes": [2], "first": 1}})
        );
    }

    #[test]
    fn a_failing_operation_leaves_the_document_unchanged() {
        let mut doc = json!({"a": 1});
        let before = doc.clone();
        let r = apply(
            &mut doc,
            &json!([{"op": "add", "path": "/b", "value": 2}, {"op": "remove", "path": "/c"}]),
        );
        assert!(r.is_err());
        assert_eq!(doc, before);
    }
}
