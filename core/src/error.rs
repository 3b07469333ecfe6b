//! Errors: [`QueryError`], shared by every caller of one fetch, and the type-erased form the
//! cache stores.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::key::QueryKey;

/// Why a query produced no data.
///
/// The query function's own error stays typed ([`QueryError::Failed`] holds an `Arc<E>`, since
/// every caller that joined the fetch receives the same error). Cloning is cheap.
///
/// # Examples
///
/// ```
/// use pystackquery_core::QueryError;
///
/// let err: QueryError<std::io::Error> = QueryError::Panicked("query function panicked: boom".into());
/// assert_eq!(err.to_string(), "query function panicked: boom");
/// assert!(err.failed().is_none());
/// ```
#[non_exhaustive]
pub enum QueryError<E> {
    /// The query function returned this error (after the retries it was allowed).
    Failed(Arc<E>),
    /// User code panicked; the message names what (query function, `select`, retry predicate,
    /// retry delay, a mutation callback, the data type's `Clone`) and carries the payload's
    /// message. The key keeps working.
    Panicked(Arc<str>),
    /// An error read back from persistent storage, where only its message is kept.
    Restored(Arc<str>),
    /// The fetch was cancelled before it finished: by `cancel_queries`, by removing or
    /// resetting its query, because its client was dropped, or because the runtime dropped it.
    Cancelled,
    /// The key is cached with another data or error type than the one asked for.
    TypeMismatch(TypeMismatch),
}

/// A key was used with another data (or error) type than the one it is cached with.
///
/// The cache keeps one query per key, of one type; asking for it as another type is a bug in
/// the caller, reported instead of a panic or a silent miss.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("key {key} holds {cached}, not {requested}")]
pub struct TypeMismatch {
    /// The key asked for.
    pub key: QueryKey,
    /// The type the caller asked for.
    pub requested: &'static str,
    /// The type the key is cached with.
    pub cached: &'static str,
}

impl<E> QueryError<E> {
    /// The query function's own error, if that is what this is.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use pystackquery_core::{QueryClient, QueryClientConfig, QueryOptions, key, testing::TestRuntime};
    ///
    /// #[derive(Debug, PartialEq)]
    /// struct Http(u16);
    /// impl std::fmt::Display for Http {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "HTTP {}", self.0) }
    /// }
    ///
    /// let test = TestRuntime::new();
    /// let client = QueryClient::with_runtime(test.runtime(), QueryClientConfig::default());
    /// let options = QueryOptions::new(key!("page"), || async { Err::<String, _>(Http(404)) }).retry(0);
    /// let error = test.block_on(client.fetch_query(&options)).unwrap_err();
    /// assert_eq!(error.failed(), Some(&Http(404))); // the function's own, typed error
    /// # }
    /// ```
    pub fn failed(&self) -> Option<&E> {
        match self {
            Self::Failed(e) => Some(e),
            _ => None,
        }
    }
}

impl<E> Clone for QueryError<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Failed(e) => Self::Failed(e.clone()),
            Self::Panicked(m) => Self::Panicked(m.clone()),
            Self::Restored(m) => Self::Restored(m.clone()),
            Self::Cancelled => Self::Cancelled,
            Self::TypeMismatch(m) => Self::TypeMismatch(m.clone()),
        }
    }
}

impl<E: fmt::Display> fmt::Display for QueryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(e) => e.fmt(f),
            Self::Panicked(m) => f.write_str(m),
            Self::Restored(m) => f.write_str(m),
            Self::Cancelled => f.write_str("cancelled before it finished"),
            Self::TypeMismatch(m) => m.fmt(f),
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for QueryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
            Self::Panicked(m) => f.debug_tuple("Panicked").field(m).finish(),
            Self::Restored(m) => f.debug_tuple("Restored").field(m).finish(),
            Self::Cancelled => f.write_str("Cancelled"),
            Self::TypeMismatch(m) => f.debug_tuple("TypeMismatch").field(m).finish(),
        }
    }
}

/// Any `E` that can be displayed and debugged will do, `String` included, so `?` converts a
/// `QueryError<String>` into `Box<dyn Error>` or `anyhow::Error`. The error's own message is
/// part of this one's `Display`; there is no `source` (it would need `E: Error`).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use pystackquery_core::QueryError;
///
/// fn load() -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
///     let failed: Result<u32, QueryError<String>> =
///         Err(QueryError::Failed(Arc::new("upstream said 503".to_string())));
///     Ok(failed?)
/// }
/// assert_eq!(load().unwrap_err().to_string(), "upstream said 503");
/// ```
impl<E> std::error::Error for QueryError<E>
where
    E: fmt::Display + fmt::Debug + 'static,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::TypeMismatch(m) => Some(m),
            _ => None,
        }
    }
}

/// A user error with its type erased, so that a cache entry need not know the error type.
pub(crate) trait DynError: Send + Sync + 'static {
    fn display(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<E: fmt::Display + Send + Sync + 'static> DynError for E {
    fn display(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// [`QueryError`] without its type parameter: what the cache stores.
#[derive(Clone)]
pub(crate) enum ErasedError {
    Failed(Arc<dyn DynError>),
    Panicked(Arc<str>),
    Restored(Arc<str>),
    Cancelled,
}

impl ErasedError {
    pub(crate) fn from_typed<E: fmt::Display + Send + Sync + 'static>(
        error: &QueryError<E>,
    ) -> Self {
        match error {
            QueryError::Failed(e) => Self::Failed(e.clone()),
            QueryError::Panicked(m) => Self::Panicked(m.clone()),
            QueryError::Restored(m) => Self::Restored(m.clone()),
            QueryError::Cancelled => Self::Cancelled,
            QueryError::TypeMismatch(m) => Self::Restored(m.to_string().into()),
        }
    }

    /// Gives the error its type back. A `Failed` error of another type than `E` becomes a
    /// [`QueryError::TypeMismatch`].
    pub(crate) fn typed<E: Send + Sync + 'static>(&self, key: &QueryKey) -> QueryError<E> {
        match self {
            Self::Failed(e) => match e.clone().into_any().downcast::<E>() {
                Ok(e) => QueryError::Failed(e),
                Err(_) => QueryError::TypeMismatch(TypeMismatch {
                    key: key.clone(),
                    requested: std::any::type_name::<E>(),
                    cached: "another error type",
                }),
            },
            Self::Panicked(m) => QueryError::Panicked(m.clone()),
            Self::Restored(m) => QueryError::Restored(m.clone()),
            Self::Cancelled => QueryError::Cancelled,
        }
    }
}

impl fmt::Display for ErasedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(e) => e.display(f),
            Self::Panicked(m) => f.write_str(m),
            Self::Restored(m) => f.write_str(m),
            Self::Cancelled => f.write_str("cancelled before it finished"),
        }
    }
}

impl fmt::Debug for ErasedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErasedError({self})")
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> Arc<str> {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        Arc::from(*s)
    } else if let Some(s) = payload.downcast_ref::<String>() {
        Arc::from(s.as_str())
    } else {
        Arc::from("non-string panic payload")
    }
}
