//! Key files: the secret key as hex on one line, readable by its owner only (0600).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use bitcoin::hex::{DisplayHex, FromHex};
use hallmark_protocol::SigningKey;

/// A fresh random key.
pub fn generate() -> SigningKey {
    loop {
        // A random 32-byte string is a valid secret except with probability ~2^-128.
        if let Ok(k) = SigningKey::from_bytes(&rand::random::<[u8; 32]>()) {
            return k;
        }
    }
}

/// Writes `key` to a new file with mode 0600; refuses to overwrite.
pub fn write(path: &Path, key: &SigningKey) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {}", path.display()))?;
    writeln!(f, "{}", key.secret_bytes().to_lower_hex_string())?;
    f.sync_all()?;
    Ok(())
}

/// Reads a key file; refuses files others can read.
pub fn read(path: &Path) -> Result<SigningKey> {
    let meta =
        fs::metadata(path).with_context(|| format!("reading key file {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "key file {} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let text = fs::read_to_string(path)?;
    let bytes = <[u8; 32]>::from_hex(text.trim())
        .with_context(|| format!("{}: not 64 hex digits", path.display()))?;
    SigningKey::from_bytes(&bytes)
        .with_context(|| format!("{}: not a valid secp256k1 secret key", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_0600_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let k = generate();
        write(&p, &k).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read(&p).unwrap().public_key(), k.public_key());
        assert!(write(&p, &k).is_err());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read(&p).is_err());
    }
}
