//! Parses a JSON object keeping only the named top-level fields: the rules
//! of a store read a few fields, and building every key and string of an
//! object is most of the cost of evaluating them. Anything but an object is
//! an error (no rule can hold on it: every path names a field).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// The fields of the object in `json` whose names are in `names` (sorted),
/// as an object value.
pub fn fields(json: &[u8], names: &[String]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let v = Object(names).deserialize(&mut de)?;
    de.end()?;
    Ok(Value::Object(v))
}

struct Object<'n>(&'n [String]);

impl<'de> DeserializeSeed<'de> for Object<'_> {
    type Value = Map<String, Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Object<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = m.next_key_seed(Key(self.0))? {
            match key {
                Some(k) => {
                    let v: Value = m.next_value()?;
                    out.insert(k, v);
                }
                None => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A key: `Some` (owned) if it is one of the names, else `None`.
struct Key<'n>(&'n [String]);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, k: &str) -> Result<Self::Value, E> {
        Ok(self
            .0
            .binary_search_by(|n| n.as_str().cmp(k))
            .ok()
            .map(|_| k.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keeps_only_the_named_fields_whole() {
        let j = br#"{"a":1,"b":{"c":[1,"x"]},"c":"s","d\"e":2,"a2":null}"#;
        assert_eq!(
            fields(j, &names(&["a", "b", "d\"e"])).unwrap(),
            json!({"a":1,"b":{"c":[1,"x"]},"d\"e":2})
        );
        assert_eq!(fields(j, &[]).unwrap(), json!({}));
    }

    #[test]
    fn anything_but_one_object_is_an_error() {
        for j in [
            &b"[1]"[..],
            b"5",
            b"\"s\"",
            b"{\"a\":1} x",
            b"{\"a\":",
            b"null",
        ] {
            assert!(
                fields(j, &names(&["a"])).is_err(),
                "{}",
                String::from_utf8_lossy(j)
            );
        }
    }
}
