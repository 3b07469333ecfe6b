//! Coherence messages: [`CoherenceOp`] and [`CoherenceMessage`], with their JSON form.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::key::QueryKey;

/// What a coherence message tells the other processes.
///
/// # Examples
///
/// ```
/// use pystackquery_core::coherence::CoherenceOp;
///
/// assert_eq!(serde_json::to_string(&CoherenceOp::Invalidate).unwrap(), r#""invalidate""#);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CoherenceOp {
    /// The key was invalidated: mark it stale (refetch it if active).
    Invalidate,
    /// The key was removed, and its L2 record deleted: drop it from memory.
    Remove,
    /// The key was reset, and its L2 record deleted: back to the initial state.
    Reset,
    /// Newer data was written to L2: read it and adopt it if newer than memory.
    Set,
}

/// One message on the bus (see the [module documentation](super) for its JSON form).
///
/// # Examples
///
/// ```
/// use pystackquery_core::coherence::{CoherenceMessage, CoherenceOp};
/// use pystackquery_core::key;
///
/// let message = CoherenceMessage {
///     v: 1,
///     origin: "worker-3".to_string(),
///     op: CoherenceOp::Reset,
///     key: key!("user", 42).storage_string().to_string(),
///     parts: Some(key!("user", 42)),
///     data_updated_at: None,
/// };
/// assert_eq!(
///     message.to_json(),
///     r#"{"v":1,"origin":"worker-3","op":"reset","key":"('user', 42)","parts":["user",42],"data_updated_at":null}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoherenceMessage {
    /// Format version: 1.
    #[serde(default = "version")]
    pub v: u32,
    /// The sending client's id; a client ignores its own messages.
    pub origin: String,
    /// What happened.
    pub op: CoherenceOp,
    /// The key's storage string ([`QueryKey::storage_string`], Python's `str(key)`).
    pub key: String,
    /// The key's parts as a JSON array (optional: a receiver without it looks the key up by
    /// its storage string among the cached keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<QueryKey>,
    /// For `set`: the data's `data_updated_at`, in Unix seconds.
    #[serde(default)]
    pub data_updated_at: Option<f64>,
}

fn version() -> u32 {
    1
}

impl CoherenceMessage {
    /// The message as one line of JSON.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::coherence::{CoherenceMessage, CoherenceOp};
    ///
    /// let text = r#"{"v":1,"origin":"py-1","op":"invalidate","key":"('todos',)"}"#;
    /// let message = CoherenceMessage::from_json(text).unwrap();
    /// assert_eq!(message.op, CoherenceOp::Invalidate);
    /// assert_eq!(CoherenceMessage::from_json(&message.to_json()).unwrap(), message);
    /// ```
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a message.
    ///
    /// # Errors
    ///
    /// When `text` is not a message.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::coherence::CoherenceMessage;
    ///
    /// // A message published by a Python process.
    /// let message = CoherenceMessage::from_json(r#"{"origin":"py-1","op":"set","key":"('n',)","data_updated_at":1700000000.0}"#).unwrap();
    /// assert_eq!(message.v, 1); // the version defaults to 1
    /// assert!(CoherenceMessage::from_json("PING").is_err());
    /// ```
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// `data_updated_at` as a time, if present and representable.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use pystackquery_core::coherence::CoherenceMessage;
    ///
    /// let message = CoherenceMessage::from_json(r#"{"origin":"a","op":"set","key":"('n',)","data_updated_at":1700000000.5}"#).unwrap();
    /// assert_eq!(message.updated_at(), Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(1700000000.5)));
    /// ```
    pub fn updated_at(&self) -> Option<SystemTime> {
        let secs = self.data_updated_at.filter(|s| s.is_finite() && *s >= 0.0)?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(secs).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_json_round_trips_and_parts_are_optional() {
        let text = r#"{"origin":"py-1","op":"set","key":"('user', 42)","data_updated_at":1.5}"#;
        let message = CoherenceMessage::from_json(text).unwrap();
        assert_eq!((message.v, message.op, message.parts.clone()), (1, CoherenceOp::Set, None));
        assert_eq!(
            message.updated_at(),
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(1500))
        );
        let back = CoherenceMessage::from_json(&message.to_json()).unwrap();
        assert_eq!(back, message);
    }
}
