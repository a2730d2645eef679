//! Agent key files: one secp256k1 private key as hex, readable by its owner only.

use osaurus_relay_engine::auth::{to_checksum, SecretKey};
use std::io::Write;
use std::path::Path;

/// A new random key.
pub fn generate() -> SecretKey {
    loop {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).expect("the OS random source failed");
        // Zero or out-of-range scalars are astronomically rare: draw again.
        if let Some(k) = SecretKey::from_bytes(&b) {
            return k;
        }
    }
}

/// Writes `key` to a new file with mode 0600; refuses to overwrite.
pub fn write(path: &Path, key: &SecretKey) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    writeln!(f, "{}", key.to_hex())
}

pub fn read(path: &Path) -> Result<SecretKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    SecretKey::from_hex(text.trim()).ok_or_else(|| {
        format!(
            "{}: not a secp256k1 private key (64 hex digits)",
            path.display()
        )
    })
}

pub fn address(key: &SecretKey) -> String {
    to_checksum(&key.address())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_private_files() {
        let dir = std::env::temp_dir().join(format!("osaurus-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.key");
        let _ = std::fs::remove_file(&path);
        let k = generate();
        write(&path, &k).unwrap();
        assert!(write(&path, &generate()).is_err(), "never overwrites a key");
        assert_eq!(read(&path).unwrap().address(), k.address());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "nonsense").unwrap();
        assert!(read(&path)
            .unwrap_err()
            .contains("not a secp256k1 private key"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
