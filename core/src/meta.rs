//! [`Meta`]: free-form information attached to a query's or a mutation's options, handed to
//! its function (TanStack's `meta`).

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// Free-form JSON attached to options with `meta(...)` and handed to the function in its
/// context (TanStack's `meta`): a tag for logging, the source an error message names, a
/// tenant. Cloning is a reference-count increment. Empty (`Value::Null`) when none was set.
///
/// Defaults registered with [`QueryClient::set_query_defaults`](crate::QueryClient::set_query_defaults)
/// may carry meta too; a query's own meta replaces theirs as a whole.
///
/// # Examples
///
/// ```
/// use pystackquery_core::Meta;
///
/// let meta = Meta::new(serde_json::json!({ "source": "billing" }));
/// assert_eq!(meta.get("source").and_then(|v| v.as_str()), Some("billing"));
/// assert!(Meta::default().get("source").is_none());
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct Meta(Option<Arc<Value>>);

impl Meta {
    /// Meta holding `value`.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::Meta;
    ///
    /// let meta = Meta::new(serde_json::json!({ "owner": "search" }));
    /// assert!(!meta.is_empty());
    /// ```
    pub fn new(value: Value) -> Self {
        Self(Some(Arc::new(value)))
    }

    /// The value (`Value::Null` when none was set).
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::Meta;
    ///
    /// assert_eq!(Meta::new(serde_json::json!([1, 2])).value()[1], 2);
    /// assert!(Meta::default().value().is_null());
    /// ```
    pub fn value(&self) -> &Value {
        static NULL: Value = Value::Null;
        self.0.as_deref().unwrap_or(&NULL)
    }

    /// The field `name`, when the meta is an object holding it.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::Meta;
    ///
    /// let meta = Meta::from(serde_json::json!({ "retries_logged": true }));
    /// assert_eq!(meta.get("retries_logged"), Some(&serde_json::json!(true)));
    /// assert_eq!(meta.get("other"), None);
    /// ```
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.value().get(name)
    }

    /// Whether no meta was set.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::Meta;
    ///
    /// assert!(Meta::default().is_empty());
    /// assert!(!Meta::new(serde_json::Value::Null).is_empty()); // set, even if null
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl From<Value> for Meta {
    fn from(value: Value) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Meta({})", self.value())
    }
}

impl serde::Serialize for Meta {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}
