//! Canonical encoding: postcard over serde. The canonical bytes of a value are
//! `postcard::to_allocvec(value)`; decoding untrusted bytes accepts only canonical input (no
//! trailing bytes, no alternative varint forms), so bytes and values correspond one to one.

use serde::{de::DeserializeOwned, Serialize};

/// Largest message any decoder of untrusted bytes accepts.
pub const MAX_DECODE_LEN: usize = 4 * 1024 * 1024;

/// The canonical bytes of a value.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own types into a Vec cannot fail: no maps with non-string keys, no
    // unbounded sequences of unknown length. Sized first, then written into one allocation of
    // that size: growing the Vec from empty reallocated and copied it some eight times for a
    // message of a few kB.
    let len = postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .expect("postcard serialization of protocol types is infallible");
    postcard::to_extend(value, Vec::with_capacity(len))
        .expect("postcard serialization of protocol types is infallible")
}

/// Whether `bytes` are exactly the canonical bytes of `value`: serializes `value` against them,
/// stopping at the first difference, without writing the encoding anywhere.
fn encodes_to<T: Serialize>(value: &T, bytes: &[u8]) -> bool {
    struct Matches<'a>(&'a [u8]);
    impl postcard::ser_flavors::Flavor for Matches<'_> {
        type Output = bool;
        fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
            // (Byte by byte for every byte of a hash, key or signature: compared directly, not
            // through `try_extend`'s slice comparison.)
            match self.0.split_first() {
                Some((&b, rest)) if b == byte => {
                    self.0 = rest;
                    Ok(())
                }
                _ => Err(postcard::Error::SerializeBufferFull),
            }
        }
        fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
            match self.0.strip_prefix(data) {
                Some(rest) => {
                    self.0 = rest;
                    Ok(())
                }
                // (Any error ends the serialization; which one does not matter here.)
                None => Err(postcard::Error::SerializeBufferFull),
            }
        }
        fn finalize(self) -> postcard::Result<bool> {
            Ok(self.0.is_empty())
        }
    }
    postcard::serialize_with_flavor(value, Matches(bytes)).unwrap_or(false)
}

/// Decodes canonical bytes; anything that does not re-encode to exactly `bytes` is rejected.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_DECODE_LEN {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_DECODE_LEN,
        });
    }
    let value: T = decode_stored(bytes)?;
    if !encodes_to(&value, bytes) {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

/// Decodes bytes this process encoded itself (read back from its own store): as [`decode`]
/// but without re-encoding the value to check that the bytes are canonical. That check is what
/// keeps hashes and signatures of bytes from peers and clients unmalleable; an operator's own
/// writes are canonical by construction, and it re-encoded every stored certificate and item
/// state it read (about 4 % of an operator's CPU under load).
pub fn decode_stored<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest): (T, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Why bytes were not a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than any valid message.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Bytes given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Postcard could not decode it.
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// Bytes left over after the value.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    /// Decodes, but is not the canonical encoding of what it decodes to.
    #[error("non-canonical encoding")]
    NonCanonical,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_trailing_and_overlong_varints() {
        let bytes = encode(&(300u64, 5u8));
        assert_eq!(decode::<(u64, u8)>(&bytes), Ok((300, 5)));
        let mut trailing = bytes;
        trailing.push(0);
        assert_eq!(
            decode::<(u64, u8)>(&trailing),
            Err(DecodeError::TrailingBytes(1))
        );
        // 5 encoded as a two-byte varint (0x85 0x00) instead of 0x05.
        let overlong = [0x85u8, 0x00, 0x05];
        assert!(decode::<(u64, u8)>(&overlong).is_err());
    }

    #[test]
    fn the_canonical_check_is_byte_equality_with_the_encoding() {
        let value = (300u64, vec![1u8, 2, 3], String::from("x"), [7u8; 32]);
        let bytes = encode(&value);
        assert_eq!(bytes, postcard::to_allocvec(&value).unwrap());
        assert_eq!(bytes.capacity(), bytes.len());
        assert!(encodes_to(&value, &bytes));
        assert!(!encodes_to(&value, &bytes[..bytes.len() - 1]));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(!encodes_to(&value, &longer));
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 1;
            assert!(!encodes_to(&value, &changed), "byte {i} changed");
        }
        // 5 as the overlong varint 0x85 0x00: decodes, but is not canonical.
        assert_eq!(
            decode::<(u64, u8)>(&[0x85, 0x00, 0x05]),
            Err(DecodeError::NonCanonical)
        );
    }

    #[test]
    fn stored_bytes_decode_without_the_canonical_check_but_not_with_trailing_bytes() {
        let bytes = encode(&(300u64, 5u8));
        assert_eq!(decode_stored::<(u64, u8)>(&bytes), Ok((300, 5)));
        let mut trailing = bytes;
        trailing.push(0);
        assert_eq!(
            decode_stored::<(u64, u8)>(&trailing),
            Err(DecodeError::TrailingBytes(1))
        );
        assert!(decode_stored::<(u64, u8)>(&[0x85]).is_err());
    }

    #[test]
    fn rejects_truncated_and_oversize() {
        let bytes = encode(&(u64::MAX, 1u8));
        assert!(matches!(
            decode::<(u64, u8)>(&bytes[..bytes.len() - 2]),
            Err(DecodeError::Malformed(_))
        ));
        let big = vec![0u8; MAX_DECODE_LEN + 1];
        assert!(matches!(
            decode::<Vec<u8>>(&big),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
