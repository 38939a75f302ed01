//! secp256k1 ECDSA keys and signatures: public keys compressed (33 bytes), signatures compact
//! (64 bytes, low-S). The curve library is the one `bitcoin` re-exports, so every crate of the
//! build shares one libsecp256k1 and its types.

use bitcoin::secp256k1::{self, ecdsa, Message, SECP256K1};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

use crate::bytes::{self, HexError};

/// A compressed secp256k1 public key, parsed once when decoded.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(secp256k1::PublicKey);

impl PublicKey {
    /// The 33-byte compressed encoding.
    pub fn to_bytes(&self) -> [u8; 33] {
        self.0.serialize()
    }

    /// Parses a 33-byte compressed key. Decompressing a key (a field square root, about as
    /// costly as a tenth of a signature check) is memoised: an operator decodes the same keys
    /// many times (every stored event and item state names them).
    pub fn from_bytes(b: &[u8; 33]) -> Result<Self, KeyError> {
        parsed_keys::get_or_parse(b).map(Self)
    }

    /// The underlying library key.
    pub fn inner(&self) -> &secp256k1::PublicKey {
        &self.0
    }

    /// Verifies a compact signature over a 32-byte digest.
    pub fn verify(&self, digest: &[u8; 32], sig: &Signature) -> Result<(), KeyError> {
        let sig = ecdsa::Signature::from_compact(&sig.0).map_err(|_| KeyError::BadSignature)?;
        // libsecp256k1 accepts only low-S signatures, so a signature cannot be malleated.
        SECP256K1
            .verify_ecdsa(&Message::from_digest(*digest), &sig, &self.0)
            .map_err(|_| KeyError::BadSignature)
    }

    /// First 8 hex digits, for human output.
    pub fn short(&self) -> String {
        self.to_string()[..10].to_string()
    }
}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.to_bytes().cmp(&other.to_bytes())
    }
}

impl From<secp256k1::PublicKey> for PublicKey {
    fn from(k: secp256k1::PublicKey) -> Self {
        Self(k)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use bitcoin::hex::DisplayHex;
        write!(f, "{}", self.to_bytes().as_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let b = bytes::parse_hex::<33>(s).map_err(KeyError::Hex)?;
        Self::from_bytes(&b)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        bytes::serialize(&self.to_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b = bytes::deserialize::<D, 33>(d)?;
        Self::from_bytes(&b).map_err(serde::de::Error::custom)
    }
}

/// A bounded memo of decompressed public keys (only valid keys are kept; it is emptied when it
/// reaches [`parsed_keys::CAPACITY`], so it never grows past that).
mod parsed_keys {
    use bitcoin::secp256k1;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use super::KeyError;

    /// Most keys kept.
    pub const CAPACITY: usize = 1 << 16;

    type Memo = Mutex<HashMap<[u8; 33], secp256k1::PublicKey>>;

    fn memo() -> &'static Memo {
        static MEMO: OnceLock<Memo> = OnceLock::new();
        MEMO.get_or_init(|| Mutex::new(HashMap::new()))
    }

    pub fn get_or_parse(b: &[u8; 33]) -> Result<secp256k1::PublicKey, KeyError> {
        // A poisoned lock only means another thread panicked mid-insert: the map is still sound.
        if let Some(k) = memo().lock().unwrap_or_else(|e| e.into_inner()).get(b) {
            return Ok(*k);
        }
        let k = secp256k1::PublicKey::from_slice(b).map_err(|_| KeyError::InvalidPublicKey)?;
        let mut m = memo().lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= CAPACITY {
            m.clear();
        }
        m.insert(*b, k);
        Ok(k)
    }
}

/// A compact (r, s) ECDSA signature, kept as bytes and parsed when verified.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use bitcoin::hex::DisplayHex;
        write!(f, "Signature({})", self.0.as_hex())
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        bytes::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bytes::deserialize::<D, 64>(d).map(Self)
    }
}

/// A secret key that signs. Its `Debug` never prints the secret.
#[derive(Clone)]
pub struct SigningKey {
    secret: secp256k1::SecretKey,
    public: PublicKey,
}

impl SigningKey {
    /// From 32 secret bytes (e.g. read from a key file or derived from a seed).
    pub fn from_bytes(b: &[u8; 32]) -> Result<Self, KeyError> {
        let secret = secp256k1::SecretKey::from_slice(b).map_err(|_| KeyError::InvalidSecretKey)?;
        Ok(Self::from(secret))
    }

    /// The secret bytes, for writing a key file.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.secret_bytes()
    }

    /// The library secret key (for wallet and libp2p identity derivation).
    pub fn secret(&self) -> &secp256k1::SecretKey {
        &self.secret
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Signs a 32-byte digest (RFC 6979 deterministic nonce, low-S).
    pub fn sign(&self, digest: &[u8; 32]) -> Signature {
        let sig = SECP256K1.sign_ecdsa(&Message::from_digest(*digest), &self.secret);
        Signature(sig.serialize_compact())
    }
}

impl From<secp256k1::SecretKey> for SigningKey {
    fn from(secret: secp256k1::SecretKey) -> Self {
        let public = PublicKey(secret.public_key(SECP256K1));
        Self { secret, public }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {})", self.public)
    }
}

/// Key and signature failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not a valid compressed secp256k1 point.
    #[error("invalid public key")]
    InvalidPublicKey,
    /// Zero or not below the curve order.
    #[error("invalid secret key")]
    InvalidSecretKey,
    /// Malformed, high-S, or not made by this key over this digest.
    #[error("bad signature")]
    BadSignature,
    /// Bad hex.
    #[error("bad key hex: {0}")]
    Hex(HexError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::key;

    #[test]
    fn sign_verify_round_trip() {
        let k = key(1);
        let d = [7u8; 32];
        let sig = k.sign(&d);
        assert_eq!(k.public_key().verify(&d, &sig), Ok(()));
        assert_eq!(
            k.public_key().verify(&[8u8; 32], &sig),
            Err(KeyError::BadSignature)
        );
        assert_eq!(
            key(2).public_key().verify(&d, &sig),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn high_s_signature_is_rejected() {
        let k = key(3);
        let d = [9u8; 32];
        let sig = k.sign(&d);
        // Negate s: (r, n - s) is the malleated twin of a valid signature.
        let mut parsed = ecdsa::Signature::from_compact(&sig.0).unwrap();
        let normal = parsed;
        let n = secp256k1::constants::CURVE_ORDER;
        let mut s = [0u8; 32];
        s.copy_from_slice(&sig.0[32..]);
        // n - s with big-endian borrow arithmetic.
        let mut out = [0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let v = n[i] as i16 - s[i] as i16 - borrow;
            borrow = i16::from(v < 0);
            out[i] = v.rem_euclid(256) as u8;
        }
        let mut high = sig.0;
        high[32..].copy_from_slice(&out);
        parsed.normalize_s();
        assert_eq!(parsed, normal, "library signatures are already low-S");
        assert_eq!(
            k.public_key().verify(&d, &Signature(high)),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn public_key_text_round_trip_and_uncompressed_rejected() {
        let pk = key(4).public_key();
        let s = pk.to_string();
        assert_eq!(s.len(), 66);
        assert_eq!(s.parse::<PublicKey>().unwrap(), pk);
        let mut bad = pk.to_bytes();
        bad[0] = 0x04;
        assert_eq!(PublicKey::from_bytes(&bad), Err(KeyError::InvalidPublicKey));
    }

    #[test]
    fn memoised_parsing_gives_the_library_key_and_never_accepts_an_invalid_one() {
        for i in 0..50u8 {
            let pk = key(100 + u32::from(i)).public_key();
            let lib = secp256k1::PublicKey::from_slice(&pk.to_bytes()).unwrap();
            // First parse fills the memo, the second comes from it: both are the library's key.
            assert_eq!(PublicKey::from_bytes(&pk.to_bytes()).unwrap().inner(), &lib);
            assert_eq!(PublicKey::from_bytes(&pk.to_bytes()).unwrap().inner(), &lib);
            // x with no point on the curve (x = 5 has no square root of x^3 + 7): refused every
            // time, so never memoised.
            let mut off_curve = [0u8; 33];
            off_curve[0] = 0x02 + (i % 2);
            off_curve[32] = 5;
            for _ in 0..2 {
                assert_eq!(
                    PublicKey::from_bytes(&off_curve),
                    Err(KeyError::InvalidPublicKey)
                );
            }
        }
    }
}
