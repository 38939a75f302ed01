//! Fixed-size byte strings in serde: raw bytes in binary formats (postcard writes them as they
//! are, with no length prefix, so a hash appears verbatim inside the canonical encoding — which is
//! what lets OpenTimestamps express our hashes as prepend/append/sha256 operations), lowercase
//! hex in human-readable formats (JSON for the HTTP API and config files).

use bitcoin::hex::buf_encoder::BufEncoder;
use bitcoin::hex::{Case, DisplayHex, FromHex};
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserializer, Serializer};
use std::fmt;
use std::marker::PhantomData;

/// Serializes `bytes` as hex (human-readable formats) or as a tuple of `N` bytes.
pub fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        if N <= MAX_ON_STACK {
            // On the stack, without `fmt`: a JSON response holds dozens of hashes and
            // signatures, and this is what each costs.
            let mut hex = BufEncoder::<{ 2 * MAX_ON_STACK }>::new();
            hex.put_bytes(bytes, Case::Lower);
            s.serialize_str(hex.as_str())
        } else {
            s.serialize_str(&bytes.to_lower_hex_string())
        }
    } else {
        let mut t = s.serialize_tuple(N)?;
        for b in bytes {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

/// Longest byte string [`serialize`] writes as hex without allocating (a signature's 64).
const MAX_ON_STACK: usize = 64;

/// The inverse of [`serialize`].
pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
    if d.is_human_readable() {
        let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        parse_hex::<N>(&s).map_err(D::Error::custom)
    } else {
        d.deserialize_tuple(N, ArrayVisitor::<N>(PhantomData))
    }
}

/// Parses exactly `N` bytes of hex.
pub fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    if s.len() != 2 * N {
        return Err(HexError::Length {
            expected: 2 * N,
            got: s.len(),
        });
    }
    let v = Vec::<u8>::from_hex(s).map_err(|_| HexError::Invalid)?;
    let mut out = [0u8; N];
    out.copy_from_slice(&v);
    Ok(out)
}

/// A hex string that is not the expected bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// Wrong number of hex digits.
    #[error("expected {expected} hex digits, got {got}")]
    Length {
        /// Digits expected.
        expected: usize,
        /// Digits given.
        got: usize,
    },
    /// Not hex.
    #[error("invalid hex digit")]
    Invalid,
}

struct ArrayVisitor<const N: usize>(PhantomData<[u8; N]>);

impl<'de, const N: usize> Visitor<'de> for ArrayVisitor<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{N} bytes")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
        let mut out = [0u8; N];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = seq
                .next_element()?
                .ok_or_else(|| A::Error::invalid_length(i, &self))?;
        }
        Ok(out)
    }
}

/// Declares a 32-byte hash newtype: hex `Display`/`FromStr`/`Debug`, raw-bytes/hex serde.
#[macro_export]
macro_rules! hash_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The all-zero value (used as "no previous" marker).
            pub const ZERO: Self = Self([0u8; 32]);

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                use ::bitcoin::hex::DisplayHex as _;
                write!(f, "{}", self.0.as_hex())
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::bytes::HexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::bytes::parse_hex::<32>(s).map(Self)
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $crate::bytes::serialize(&self.0, s)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::bytes::deserialize::<D, 32>(d).map(Self)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Three(
        #[serde(with = "super")] [u8; 32],
        #[serde(with = "super")] [u8; 64],
        #[serde(with = "super")] [u8; 65],
    );

    proptest! {
        #[test]
        fn hex_is_lowercase_and_round_trips(a in any::<[u8; 32]>(), b in prop::collection::vec(any::<u8>(), 64), c in prop::collection::vec(any::<u8>(), 65)) {
            let v = Three(a, b.try_into().unwrap(), c.try_into().unwrap());
            let json = serde_json::to_string(&v).unwrap();
            // The stack path (32, 64 bytes) and the allocating one (65) write the same hex.
            let expected = format!(
                "[\"{}\",\"{}\",\"{}\"]",
                v.0.to_lower_hex_string(),
                v.1.to_lower_hex_string(),
                v.2.to_lower_hex_string()
            );
            prop_assert_eq!(&json, &expected);
            prop_assert_eq!(serde_json::from_str::<Three>(&json).unwrap(), v);
        }
    }
}
