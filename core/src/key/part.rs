//! [`KeyPart`]: one part of a query key (a string, an integer or a boolean), its conversions,
//! and its Python `repr()` form.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use super::python::write_python_str;

/// One part of a [`QueryKey`](super::QueryKey): a string, an integer or a boolean, as in a
/// Python tuple key.
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
    pub(super) fn write_python(&self, out: &mut String) {
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
