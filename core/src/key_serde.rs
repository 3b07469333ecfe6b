//! `serde` for [`QueryKey`] and [`KeyPart`]: a key is a JSON array of its parts (strings,
//! integers, booleans), as TanStack writes `queryKey` in a dehydrated state.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeSeq, Serializer};

use crate::key::{KeyPart, QueryKey};

impl Serialize for KeyPart {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if let Some(b) = self.as_bool() {
            serializer.serialize_bool(b)
        } else if let Some(s) = self.as_str() {
            serializer.serialize_str(s)
        } else {
            let i = self.as_int().unwrap_or_default();
            match i64::try_from(i) {
                Ok(i) => serializer.serialize_i64(i),
                Err(_) => serializer.serialize_u64(u64::try_from(i).unwrap_or(u64::MAX)),
            }
        }
    }
}

struct PartVisitor;

impl Visitor<'_> for PartVisitor {
    type Value = KeyPart;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key part: a string, an integer or a boolean")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyPart, E> {
        Ok(KeyPart::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyPart, E> {
        Ok(KeyPart::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyPart, E> {
        Ok(KeyPart::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyPart, E> {
        Ok(KeyPart::from(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<KeyPart, E> {
        Ok(KeyPart::from(v))
    }
}

impl<'de> Deserialize<'de> for KeyPart {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PartVisitor)
    }
}

/// A key serializes as the array of its parts: `key!("user", 42)` is `["user",42]`.
///
/// # Examples
///
/// ```
/// use pystackquery_core::{QueryKey, key};
///
/// let json = serde_json::to_string(&key!("user", 42, true)).unwrap();
/// assert_eq!(json, r#"["user",42,true]"#);
/// let back: QueryKey = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, key!("user", 42, true));
/// assert!(serde_json::from_str::<QueryKey>(r#"["user",1.5]"#).is_err());
/// ```
impl Serialize for QueryKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for part in self.parts() {
            seq.serialize_element(part)?;
        }
        seq.end()
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = QueryKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a query key: an array of strings, integers and booleans")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<QueryKey, A::Error> {
        let mut parts: Vec<KeyPart> = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(part) = seq.next_element()? {
            parts.push(part);
        }
        Ok(QueryKey::from_parts(parts))
    }
}

impl<'de> Deserialize<'de> for QueryKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(KeyVisitor)
    }
}
