//! The replication handshake: both ends prove they hold the replica set's secret, without
//! sending it, before any write is accepted.
//!
//! ```text
//! initiator                                   acceptor
//!   HELLO     name_i, dc_i, nonce_i   ----->
//!                                     <-----  CHALLENGE name_a, dc_a, nonce_a,
//!                                                       mac_a = HMAC(secret, "server" | transcript)
//!   (checks mac_a and that name_a is the peer it dialled)
//!   AUTH      mac_i = HMAC(secret, "client" | transcript)  ----->
//!                                     <-----  AUTH_OK  (or REFUSED and a close)
//! transcript = nonce_i | nonce_a | len(name_i) name_i | len(name_a) name_a
//! ```
//! HMAC-SHA256; MACs are compared in constant time (`hmac`'s `verify_slice`). Fresh nonces on
//! both sides make a recorded handshake useless for a replay.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use super::frame::{FrameError, MetaReader, MetaWriter, NONCE_BYTES};

type HmacSha256 = hmac::Hmac<Sha256>;

/// Shortest secret accepted.
pub const SECRET_MIN_BYTES: usize = 16;

/// Which side computes a MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Initiator,
    Acceptor,
}

fn mac(
    secret: &[u8],
    side: Side,
    nonce_i: &[u8; NONCE_BYTES],
    nonce_a: &[u8; NONCE_BYTES],
    name_i: &str,
    name_a: &str,
) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(match side {
        Side::Initiator => b"podstore-repl-v1 client",
        Side::Acceptor => b"podstore-repl-v1 server",
    });
    m.update(nonce_i);
    m.update(nonce_a);
    for name in [name_i, name_a] {
        m.update(&(name.len() as u32).to_le_bytes());
        m.update(name.as_bytes());
    }
    m
}

/// The MAC one side sends.
pub fn sign(
    secret: &[u8],
    side: Side,
    nonce_i: &[u8; NONCE_BYTES],
    nonce_a: &[u8; NONCE_BYTES],
    name_i: &str,
    name_a: &str,
) -> [u8; 32] {
    mac(secret, side, nonce_i, nonce_a, name_i, name_a).finalize().into_bytes().into()
}

/// Checks the MAC the other side sent, in constant time.
pub fn verify(
    secret: &[u8],
    side: Side,
    nonce_i: &[u8; NONCE_BYTES],
    nonce_a: &[u8; NONCE_BYTES],
    name_i: &str,
    name_a: &str,
    got: &[u8],
) -> bool {
    mac(secret, side, nonce_i, nonce_a, name_i, name_a).verify_slice(got).is_ok()
}

/// A fresh random nonce from the kernel.
pub fn nonce() -> std::io::Result<[u8; NONCE_BYTES]> {
    let mut n = [0u8; NONCE_BYTES];
    getrandom::fill(&mut n).map_err(std::io::Error::other)?;
    Ok(n)
}

/// Reads the secret file: it must exist, be readable by the owner only (no group or other
/// permission bits) and hold at least `SECRET_MIN_BYTES` bytes (surrounding whitespace
/// ignored).
pub fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("replication.secret_file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "replication.secret_file {} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        ));
    }
    let raw = std::fs::read(path).map_err(|e| format!("replication.secret_file {}: {e}", path.display()))?;
    let s = raw.trim_ascii().to_vec();
    if s.len() < SECRET_MIN_BYTES {
        return Err(format!(
            "replication.secret_file {} holds {} bytes; at least {SECRET_MIN_BYTES} are needed",
            path.display(),
            s.len()
        ));
    }
    Ok(s)
}

/// The initiator's HELLO: who it is, and its nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub name: String,
    pub datacenter: String,
    pub nonce: [u8; NONCE_BYTES],
}

/// The acceptor's CHALLENGE: who it is, its nonce, and its MAC over the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub name: String,
    pub datacenter: String,
    pub nonce: [u8; NONCE_BYTES],
    pub mac: [u8; 32],
}

/// Longest node or datacenter name in a handshake (a node_id's limit).
pub const NAME_MAX_BYTES: usize = 64;

fn name(m: &mut MetaReader) -> Result<String, FrameError> {
    let b = m.str16()?;
    if b.len() > NAME_MAX_BYTES {
        return Err(FrameError::Field("name too long"));
    }
    String::from_utf8(b.to_vec()).map_err(|_| FrameError::Field("name is not UTF-8"))
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        MetaWriter::default()
            .str16(self.name.as_bytes())
            .str16(self.datacenter.as_bytes())
            .bytes(&self.nonce)
            .0
    }

    /// Decodes a HELLO's metadata from a peer not yet authenticated: bounded, never panics.
    pub fn decode(meta: &[u8]) -> Result<Hello, FrameError> {
        let mut m = MetaReader::new(meta);
        let h = Hello { name: name(&mut m)?, datacenter: name(&mut m)?, nonce: m.array()? };
        m.end()?;
        Ok(h)
    }
}

impl Challenge {
    pub fn encode(&self) -> Vec<u8> {
        MetaWriter::default()
            .str16(self.name.as_bytes())
            .str16(self.datacenter.as_bytes())
            .bytes(&self.nonce)
            .bytes(&self.mac)
            .0
    }

    /// Decodes a CHALLENGE's metadata: bounded, never panics.
    pub fn decode(meta: &[u8]) -> Result<Challenge, FrameError> {
        let mut m = MetaReader::new(meta);
        let c =
            Challenge { name: name(&mut m)?, datacenter: name(&mut m)?, nonce: m.array()?, mac: m.array()? };
        m.end()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_bind_secret_side_nonces_and_names() {
        let (ni, na) = ([1u8; 32], [2u8; 32]);
        let s = b"0123456789abcdef";
        let m = sign(s, Side::Acceptor, &ni, &na, "a", "b");
        assert!(verify(s, Side::Acceptor, &ni, &na, "a", "b", &m));
        assert!(!verify(s, Side::Initiator, &ni, &na, "a", "b", &m), "a server MAC is not a client MAC");
        assert!(!verify(b"0123456789abcdeX", Side::Acceptor, &ni, &na, "a", "b", &m));
        assert!(!verify(s, Side::Acceptor, &na, &ni, "a", "b", &m));
        assert!(!verify(s, Side::Acceptor, &ni, &na, "ab", "", &m), "names are length-prefixed");
        assert!(!verify(s, Side::Acceptor, &ni, &na, "a", "b", &m[..31]));
        assert_ne!(nonce().expect("nonce"), nonce().expect("nonce"));
    }

    #[test]
    fn handshake_messages_round_trip_and_refuse_junk() {
        let h = Hello { name: "pod-01".into(), datacenter: "dc1".into(), nonce: [7; 32] };
        assert_eq!(Hello::decode(&h.encode()), Ok(h.clone()));
        let c = Challenge { name: "pod-02".into(), datacenter: "dc2".into(), nonce: [8; 32], mac: [9; 32] };
        assert_eq!(Challenge::decode(&c.encode()), Ok(c.clone()));
        let enc = h.encode();
        assert!(Hello::decode(&enc[..enc.len() - 1]).is_err(), "short");
        assert!(Hello::decode(&[enc.as_slice(), b"x"].concat()).is_err(), "trailing bytes");
        let long = Hello { name: "n".repeat(65), ..h };
        assert!(Hello::decode(&long.encode()).is_err(), "a name over 64 bytes");
        assert!(Challenge::decode(&enc).is_err(), "a HELLO is not a CHALLENGE");
    }

    #[test]
    fn the_secret_file_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("podstore-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("secret");
        std::fs::write(&p, "0123456789abcdef0123\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(read_secret(&p).expect_err("world-readable").contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_secret(&p).expect("secret"), b"0123456789abcdef0123");
        std::fs::write(&p, "short").expect("write");
        assert!(read_secret(&p).expect_err("short").contains("at least"));
        assert!(read_secret(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
