//! Query keys: what identifies a query ([`QueryKey`], its conversions and the [`key!`] macro),
//! how keys match by prefix, their storage string, and the pass-through hasher for maps keyed
//! by them. Parts are in `part`, the Python string form of a part in `python`.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

mod part;
mod python;

pub use part::KeyPart;

/// Identifies a query: a sequence of [`KeyPart`]s, like the tuple keys of Python pystackquery.
///
/// Cloning is a reference-count increment; the hash is computed once, when the key is built,
/// so looking a key up in the cache does not rehash its parts.
///
/// A key's [storage string](QueryKey::storage_string) (and its `Display`) is exactly what
/// Python's `str()` prints for the same tuple, so Rust and Python processes address the same
/// records in a shared store.
///
/// # Examples
///
/// ```
/// use pystackquery_core::{QueryKey, key};
///
/// let user = key!("user", 42);
/// assert_eq!(user.to_string(), "('user', 42)");
/// assert_eq!(QueryKey::from(("user", 42)), user);
/// assert_eq!(QueryKey::from(["todos"]).to_string(), "('todos',)");
/// assert!(QueryKey::from(("user",)).is_prefix_of(&user));
/// assert!(!user.is_prefix_of(&key!("user")));
/// ```
#[derive(Clone)]
pub struct QueryKey(Arc<KeyInner>);

struct KeyInner {
    hash: u64,
    parts: Box<[KeyPart]>,
    storage: OnceLock<Box<str>>,
}

impl QueryKey {
    /// Builds a key from its parts.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::{KeyPart, QueryKey, key};
    ///
    /// // Parts known only at run time, e.g. a path split on '/'.
    /// let path = "repos/rust-lang/rust";
    /// let k = QueryKey::from_parts(path.split('/').map(KeyPart::from));
    /// assert_eq!(k, key!("repos", "rust-lang", "rust"));
    /// ```
    pub fn from_parts<I, P>(parts: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<KeyPart>,
    {
        let parts: Box<[KeyPart]> = parts.into_iter().map(Into::into).collect();
        // A fixed-key SipHash: the same key hashes the same in every process, which keeps
        // hashing independent of the hasher a map is built with.
        let mut hasher = std::hash::DefaultHasher::new();
        parts.hash(&mut hasher);
        Self(Arc::new(KeyInner { hash: hasher.finish(), parts, storage: OnceLock::new() }))
    }

    /// The precomputed hash of the parts.
    pub(crate) fn hash_u64(&self) -> u64 {
        self.0.hash
    }

    /// The parts of the key.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::key;
    ///
    /// let k = key!("user", 7);
    /// assert_eq!(k.parts().len(), 2);
    /// assert_eq!(k.parts()[1].as_int(), Some(7));
    /// ```
    pub fn parts(&self) -> &[KeyPart] {
        &self.0.parts
    }

    /// Number of parts.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::key;
    ///
    /// assert_eq!(key!("user", 7).len(), 2);
    /// assert_eq!(key!().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.0.parts.len()
    }

    /// Whether the key has no parts (`()`), which as a filter matches every key.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::{QueryKey, key};
    ///
    /// assert!(key!().is_empty());
    /// assert!(QueryKey::from(()).is_empty()); // the empty key matches every query in a filter
    /// assert!(!key!("a").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.parts.is_empty()
    }

    /// Whether `self`'s parts are the first parts of `other`, compared part by part. A key is a
    /// prefix of itself.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::key;
    ///
    /// assert!(key!("todos").is_prefix_of(&key!("todos", 1)));
    /// assert!(key!("todos", 1).is_prefix_of(&key!("todos", 1)));
    /// assert!(!key!("todos", 1).is_prefix_of(&key!("todos")));
    /// assert!(!key!("todo").is_prefix_of(&key!("todos"))); // parts, not characters
    /// ```
    pub fn is_prefix_of(&self, other: &QueryKey) -> bool {
        other.0.parts.starts_with(&self.0.parts)
    }

    /// The string Python's `str()` gives for the same tuple, e.g. `('user', '123')`: the name
    /// under which persistent storage keeps this key's record.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::key;
    ///
    /// assert_eq!(key!("user", "123").storage_string(), "('user', '123')");
    /// assert_eq!(key!("page", 2, true).storage_string(), "('page', 2, True)");
    /// assert_eq!(key!("all").storage_string(), "('all',)");
    /// ```
    pub fn storage_string(&self) -> &str {
        self.0.storage.get_or_init(|| {
            let mut out = String::with_capacity(16 * self.0.parts.len() + 2);
            out.push('(');
            for (i, part) in self.0.parts.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                part.write_python(&mut out);
            }
            if self.0.parts.len() == 1 {
                out.push(',');
            }
            out.push(')');
            out.into_boxed_str()
        })
    }
}

impl PartialEq for QueryKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.parts == other.0.parts)
    }
}

impl Eq for QueryKey {}

impl Hash for QueryKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl PartialOrd for QueryKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for QueryKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.parts.cmp(&other.0.parts)
    }
}

impl fmt::Display for QueryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.storage_string())
    }
}

impl fmt::Debug for QueryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueryKey{}", self.storage_string())
    }
}

impl From<&QueryKey> for QueryKey {
    fn from(value: &QueryKey) -> Self {
        value.clone()
    }
}

impl From<&str> for QueryKey {
    fn from(value: &str) -> Self {
        Self::from_parts([value])
    }
}

impl From<String> for QueryKey {
    fn from(value: String) -> Self {
        Self::from_parts([value])
    }
}

impl<P: Into<KeyPart>, const N: usize> From<[P; N]> for QueryKey {
    fn from(value: [P; N]) -> Self {
        Self::from_parts(value)
    }
}

impl<P: Into<KeyPart>> From<Vec<P>> for QueryKey {
    fn from(value: Vec<P>) -> Self {
        Self::from_parts(value)
    }
}

impl<P: Into<KeyPart> + Clone> From<&[P]> for QueryKey {
    fn from(value: &[P]) -> Self {
        Self::from_parts(value.iter().cloned())
    }
}

impl From<()> for QueryKey {
    fn from((): ()) -> Self {
        Self::from_parts(std::iter::empty::<KeyPart>())
    }
}

macro_rules! tuple_key {
    ($($name:ident),+) => {
        impl<$($name: Into<KeyPart>),+> From<($($name,)+)> for QueryKey {
            #[allow(non_snake_case)]
            fn from(($($name,)+): ($($name,)+)) -> Self {
                Self::from_parts([$($name.into()),+])
            }
        }
    };
}
tuple_key!(A);
tuple_key!(A, B);
tuple_key!(A, B, C);
tuple_key!(A, B, C, D);
tuple_key!(A, B, C, D, E);
tuple_key!(A, B, C, D, E, F);
tuple_key!(A, B, C, D, E, F, G);
tuple_key!(A, B, C, D, E, F, G, H);

/// Builds a [`QueryKey`] from parts of mixed kinds.
///
/// # Examples
///
/// ```
/// use pystackquery_core::key;
///
/// let k = key!("todos", "page", 3, true);
/// assert_eq!(k.to_string(), "('todos', 'page', 3, True)");
/// assert_eq!(key!().to_string(), "()");
/// ```
#[macro_export]
macro_rules! key {
    () => { $crate::QueryKey::from(()) };
    ($($part:expr),+ $(,)?) => {
        $crate::QueryKey::from_parts([$($crate::KeyPart::from($part)),+])
    };
}

/// A `BuildHasher` for maps keyed by [`QueryKey`]: the key already carries its hash, so the
/// hasher passes it through instead of hashing it again.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct KeyHashBuilder;

impl BuildHasher for KeyHashBuilder {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

/// See [`KeyHashBuilder`].
#[derive(Debug)]
pub(crate) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than a QueryKey is hashed; fold the bytes in.
        for &b in bytes {
            self.0 = self.0.rotate_left(5) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}
