//! Query keys: what identifies a query, how keys match by prefix, and their storage string.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::{self, Write as _};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

/// One part of a [`QueryKey`]: a string, an integer or a boolean, as in a Python tuple key.
///
/// Integers cover `i64` and `u64` (a `u64` above `i64::MAX` stays exact). Parts order by kind
/// (booleans, then integers, then strings) and then by value; the order only matters for the
/// prefix index, which needs some total order.
///
/// # Examples
///
/// ```
/// use pystackquery_core::KeyPart;
///
/// assert_eq!(KeyPart::from("user").as_str(), Some("user"));
/// assert_eq!(KeyPart::from(42u8).as_int(), Some(42));
/// assert_eq!(KeyPart::from(true).as_bool(), Some(true));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPart(Repr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    Bool(bool),
    Int(i64),
    /// Only for values above `i64::MAX`, so that one number has one representation.
    BigUint(u64),
    Str(Box<str>),
}

impl KeyPart {
    /// The string, if this part is one.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::key;
    ///
    /// let k = key!("user", 42, true);
    /// assert_eq!(k.parts()[0].as_str(), Some("user"));
    /// assert_eq!(k.parts()[1].as_str(), None);
    /// ```
    pub fn as_str(&self) -> Option<&str> {
        match &self.0 {
            Repr::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this part is one.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::key;
    ///
    /// let k = key!("user", 42, u64::MAX);
    /// assert_eq!(k.parts()[1].as_int(), Some(42));
    /// assert_eq!(k.parts()[2].as_int(), Some(i128::from(u64::MAX)));
    /// assert_eq!(k.parts()[0].as_int(), None);
    /// ```
    pub fn as_int(&self) -> Option<i128> {
        match self.0 {
            Repr::Int(i) => Some(i128::from(i)),
            Repr::BigUint(u) => Some(i128::from(u)),
            _ => None,
        }
    }

    /// The boolean, if this part is one.
    ///
    /// # Examples
    ///
    /// ```
    /// use pystackquery_core::key;
    ///
    /// let k = key!("todos", true);
    /// assert_eq!(k.parts()[1].as_bool(), Some(true));
    /// assert_eq!(k.parts()[0].as_bool(), None);
    /// ```
    pub fn as_bool(&self) -> Option<bool> {
        match self.0 {
            Repr::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// Writes this part as Python's `repr()` would.
    fn write_python(&self, out: &mut String) {
        match &self.0 {
            Repr::Bool(true) => out.push_str("True"),
            Repr::Bool(false) => out.push_str("False"),
            Repr::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Repr::BigUint(u) => {
                let _ = write!(out, "{u}");
            }
            Repr::Str(s) => write_python_str(s, out),
        }
    }
}

impl fmt::Debug for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write_python(&mut out);
        f.write_str(&out)
    }
}

impl From<&str> for KeyPart {
    fn from(value: &str) -> Self {
        Self(Repr::Str(value.into()))
    }
}

impl From<String> for KeyPart {
    fn from(value: String) -> Self {
        Self(Repr::Str(value.into_boxed_str()))
    }
}

impl From<&String> for KeyPart {
    fn from(value: &String) -> Self {
        Self(Repr::Str(value.as_str().into()))
    }
}

impl From<Cow<'_, str>> for KeyPart {
    fn from(value: Cow<'_, str>) -> Self {
        Self(Repr::Str(value.into()))
    }
}

impl From<bool> for KeyPart {
    fn from(value: bool) -> Self {
        Self(Repr::Bool(value))
    }
}

macro_rules! int_part {
    ($($t:ty),*) => {$(
        impl From<$t> for KeyPart {
            fn from(value: $t) -> Self {
                Self(Repr::Int(i64::from(value)))
            }
        }
    )*};
}
int_part!(i8, i16, i32, i64, u8, u16, u32);

impl From<u64> for KeyPart {
    fn from(value: u64) -> Self {
        match i64::try_from(value) {
            Ok(i) => Self(Repr::Int(i)),
            Err(_) => Self(Repr::BigUint(value)),
        }
    }
}

impl From<usize> for KeyPart {
    fn from(value: usize) -> Self {
        // usize is at most 64 bits on every platform Rust supports.
        Self::from(value as u64)
    }
}

impl From<isize> for KeyPart {
    fn from(value: isize) -> Self {
        Self(Repr::Int(value as i64))
    }
}

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

/// Writes `s` as Python 3's `repr(str)` does: single quotes unless the text holds a single quote
/// and no double quote; backslash escapes for the quote, backslash, `\t`, `\n`, `\r`; `\xNN`,
/// `\uNNNN` or `\UNNNNNNNN` for characters Python does not consider printable; everything else
/// kept as it is.
fn write_python_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !is_python_printable(c) => {
                let code = u32::from(c);
                let _ = if code < 0x100 {
                    write!(out, "\\x{code:02x}")
                } else if code < 0x10000 {
                    write!(out, "\\u{code:04x}")
                } else {
                    write!(out, "\\U{code:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `str.isprintable()` for one character: false for the categories Cc, Cf, Co, Zl, Zp
/// and Zs (space excepted). Unassigned code points (Cn) are not tabulated here and count as
/// printable; Python escapes them, so keys holding unassigned code points may print differently.
fn is_python_printable(c: char) -> bool {
    let code = u32::from(c);
    if (0x20..0x7f).contains(&code) {
        return true;
    }
    // Noncharacters (U+FDD0..U+FDEF and the last two code points of every plane) are
    // permanently unassigned, so Python escapes them too.
    if (0xfdd0..=0xfdef).contains(&code) || code & 0xfffe == 0xfffe {
        return false;
    }
    !NON_PRINTABLE.iter().any(|&(lo, hi)| (lo..=hi).contains(&code))
}

/// Ranges of Cc, Cf, Co, Zl, Zp and Zs (without U+0020), from the Unicode character database.
const NON_PRINTABLE: &[(u32, u32)] = &[
    (0x0000, 0x001f),
    (0x007f, 0x00a0),
    (0x00ad, 0x00ad),
    (0x0600, 0x0605),
    (0x061c, 0x061c),
    (0x06dd, 0x06dd),
    (0x070f, 0x070f),
    (0x0890, 0x0891),
    (0x08e2, 0x08e2),
    (0x1680, 0x1680),
    (0x180e, 0x180e),
    (0x2000, 0x200f),
    (0x2028, 0x202f),
    (0x205f, 0x2064),
    (0x2066, 0x206f),
    (0x3000, 0x3000),
    (0xe000, 0xf8ff),
    (0xfeff, 0xfeff),
    (0xfff9, 0xfffb),
    (0x110bd, 0x110bd),
    (0x110cd, 0x110cd),
    (0x13430, 0x1343f),
    (0x1bca0, 0x1bca3),
    (0x1d173, 0x1d17a),
    (0xe0001, 0xe0001),
    (0xe0020, 0xe007f),
    (0xf0000, 0xffffd),
    (0x100000, 0x10fffd),
];

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
