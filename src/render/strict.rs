//! Manifest documents read strictly: what a reviewer sees in the file is what gets applied.
//!
//! A plain `serde_json::Value` read of YAML keeps the *last* of two equal keys (so `name: first` above
//! `name: second` applies `second`, unseen in review) and turns numbers that overflow a float (`1e400`) into
//! `null` (so `replicas: 1e400` would apply the default). `kubectl apply` refuses duplicate keys; Ferry refuses
//! both, naming the key.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A JSON value read from YAML (or JSON) with duplicate keys and non-finite numbers refused.
pub struct StrictValue(pub Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        i64::try_from(v)
            .map(|v| Value::Number(v.into()))
            .map_err(|_| E::custom(format!("the number {v} is out of range")))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v)
            .map(|v| Value::Number(v.into()))
            .map_err(|_| E::custom(format!("the number {v} is out of range")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number is out of range (infinite or not a number)"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(d).map(|v| v.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<StrictValue>()? {
            let key = match key.0 {
                Value::String(s) => s,
                // YAML allows non-string keys; JSON (and so Kubernetes) has only strings, as kubectl converts.
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".to_string(),
                _ => return Err(de::Error::custom("a mapping key is a list or a mapping")),
            };
            let StrictValue(value) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?} in a mapping")));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(yaml: &str) -> Result<Value, String> {
        serde_yaml_ng::from_str::<StrictValue>(yaml)
            .map(|v| v.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let err = read("metadata:\n  name: first\n  name: second\n").unwrap_err();
        assert!(err.contains("duplicate key \"name\""), "{err}");
        assert!(read("a: [{x: 1, x: 2}]\n").unwrap_err().contains("duplicate key \"x\""));
        // Keys that differ only as YAML types still collide once they are JSON strings.
        assert!(read("1: a\n\"1\": b\n").unwrap_err().contains("duplicate key \"1\""));
    }

    #[test]
    fn numbers_that_overflow_are_refused_not_nulled() {
        // The YAML reader keeps a float that overflows as text (the API server then refuses the type).
        assert_eq!(read("replicas: 1e400\n").unwrap()["replicas"], "1e400");
        assert!(read("x: .nan\n").unwrap_err().contains("out of range"));
        assert!(read("x: -.inf\n").unwrap_err().contains("out of range"));
    }

    #[test]
    fn ordinary_documents_read_as_serde_json_would() {
        let yaml = "a: 1\nb: [true, null, 2.5, -3, text]\nc: {d: ~}\n18446744073709551615: big\n";
        let strict = read(yaml).unwrap();
        let plain: Value = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(strict, plain);
    }
}
