//! EIP-191 `personal_sign` recovery and signing, addresses, EIP-55 checksums.

use k256::ecdsa::{Signature, SigningKey, VerifyingKey};
use k256::elliptic_curve::ops::{LinearCombination, Reduce};
use k256::elliptic_curve::point::DecompressPoint;
use k256::elliptic_curve::subtle::Choice;
use k256::elliptic_curve::PrimeField;
use k256::{AffinePoint, ProjectivePoint, Scalar, U256};
use sha3::{Digest, Keccak256};

/// An agent's Ethereum address: the last 20 bytes of the keccak of its
/// public key. Shown as `0x` + hex ([`to_lower`], [`to_checksum`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 20]);

/// Keccak-256 of `data` (Ethereum's hash, not the standardised SHA3-256).
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// keccak256("\x19Ethereum Signed Message:\n" + byte length + message).
pub fn eip191_hash(message: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(b"\x19Ethereum Signed Message:\n");
    h.update(message.len().to_string().as_bytes());
    h.update(message);
    h.finalize().into()
}

/// The message each agent signs for the tunnel handshake.
pub fn tunnel_message(address: &str, nonce: &str, timestamp: u64) -> String {
    format!("osaurus-tunnel:{address}:{nonce}:{timestamp}")
}

/// `0x` + 40 hex digits in any case (the checksum is not enforced: the
/// signature is what proves ownership).
pub fn parse_address(s: &str) -> Option<Address> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if hex.len() != 40 {
        return None;
    }
    // Every call's host names an address: eight digits at a time.
    let mut out = [0u8; 20];
    for (o, word) in out.chunks_exact_mut(4).zip(hex.as_bytes().chunks_exact(8)) {
        let w = u64::from_le_bytes(word.try_into().ok()?);
        o.copy_from_slice(&hex8(w)?.to_le_bytes());
    }
    Some(Address(out))
}

/// Eight ASCII hex digits (the first in the lowest byte) as four bytes.
fn hex8(w: u64) -> Option<u32> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    if w & HI != 0 {
        return None;
    }
    // For bytes below 0x80: the high bit of each byte at least `n`.
    let at_least = |x: u64, n: u8| x.wrapping_add(u64::from(0x80 - n) * LO) & HI;
    let digit = at_least(w, b'0') & !at_least(w, b'9' + 1);
    let lower = w | (0x20 * LO);
    let letter = at_least(lower, b'a') & !at_least(lower, b'f' + 1);
    if digit | letter != HI {
        return None;
    }
    // Each byte's value: its low four bits, plus 9 for a letter.
    let nib = (w & (0x0f * LO)) + (letter >> 7) * 9;
    // Pairs of digits into bytes, then the even bytes together.
    let pairs = ((nib << 4) | (nib >> 8)) & 0x00ff_00ff_00ff_00ff;
    let quads = (pairs | pairs >> 8) & 0x0000_ffff_0000_ffff;
    Some((quads | quads >> 16) as u32)
}

/// `0x` + lowercase hex: how the relay registers and reports addresses.
pub fn to_lower(addr: &Address) -> String {
    to_lower_in(addr, &mut [0; 42]).to_string()
}

/// [`to_lower`] into `buf`, without an allocation.
pub fn to_lower_in<'a>(addr: &Address, buf: &'a mut [u8; 42]) -> &'a str {
    buf[..2].copy_from_slice(b"0x");
    if hex::encode_to_slice(addr.0, &mut buf[2..]).is_err() {
        return "";
    }
    std::str::from_utf8(&buf[..]).unwrap_or_default()
}

/// EIP-55 mixed-case checksum form.
pub fn to_checksum(addr: &Address) -> String {
    let lower = hex::encode(addr.0);
    let hash = keccak256(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        out.push(if nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        });
    }
    out
}

/// The address of an uncompressed public key: last 20 bytes of its keccak.
fn address_of(key: &VerifyingKey) -> Address {
    let point = key.to_encoded_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash[12..]);
    Address(out)
}

/// Why a signature could not be recovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigError {
    /// Not `0x` + 130 hex digits.
    Malformed,
    /// `v` not in 0, 1, 27, 28.
    BadRecoveryId,
    /// r or s out of range, or no point recovers.
    Invalid,
}

/// Recovers the signer of an EIP-191 message from a 65-byte `r||s||v` hex signature.
/// High-s signatures are accepted (as viem does) by normalising s and flipping parity.
pub fn recover(message: &[u8], signature_hex: &str) -> Result<Address, SigError> {
    let hex = signature_hex
        .strip_prefix("0x")
        .ok_or(SigError::Malformed)?;
    if hex.len() != 130 {
        return Err(SigError::Malformed);
    }
    let mut raw = [0u8; 65];
    hex::decode_to_slice(hex, &mut raw).map_err(|_| SigError::Malformed)?;
    let parity = match raw[64] {
        0 | 27 => false,
        1 | 28 => true,
        _ => return Err(SigError::BadRecoveryId),
    };
    let mut sig = Signature::from_slice(&raw[..64]).map_err(|_| SigError::Invalid)?;
    let mut odd = parity;
    if let Some(low) = sig.normalize_s() {
        sig = low;
        odd = !odd;
    }
    recover_point(&eip191_hash(message), &sig, odd)
        .map(|key| address_of(&key))
        .ok_or(SigError::Invalid)
}

/// Q = r⁻¹(s·R − z·G), as `VerifyingKey::recover_from_prehash` computes it,
/// without its closing verification: a key recovered this way satisfies the
/// signature equation by construction, so that check only doubled the cost.
/// The caller still compares the result with the claimed address.
fn recover_point(prehash: &[u8; 32], sig: &Signature, y_odd: bool) -> Option<VerifyingKey> {
    let (r, s) = sig.split_scalars();
    let big_r = Option::<AffinePoint>::from(AffinePoint::decompress(
        &r.to_repr(),
        Choice::from(u8::from(y_odd)),
    ))?;
    let z = <Scalar as Reduce<U256>>::reduce_bytes(&(*prehash).into());
    let r_inv = Option::<Scalar>::from(r.invert())?;
    let u1 = -(r_inv * z);
    let u2 = r_inv * *s;
    let q = ProjectivePoint::lincomb(
        &ProjectivePoint::GENERATOR,
        &u1,
        &ProjectivePoint::from(big_r),
        &u2,
    );
    VerifyingKey::from_affine(q.to_affine()).ok()
}

/// Why one agent's handshake signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFail {
    /// The address is not `0x` + 40 hex digits.
    BadAddress,
    /// The signed timestamp is outside the window around the relay's clock.
    Timestamp,
    /// The signature does not recover to the claimed address.
    Signature,
}

/// Checks one agent's signature over the tunnel message built from the
/// address string exactly as sent; returns the parsed address.
pub fn verify_agent(
    address: &str,
    signature: &str,
    nonce: &str,
    timestamp: u64,
    now_unix: u64,
    window_secs: u64,
) -> Result<Address, AuthFail> {
    let claimed = parse_address(address).ok_or(AuthFail::BadAddress)?;
    if timestamp.abs_diff(now_unix) > window_secs {
        return Err(AuthFail::Timestamp);
    }
    let msg = tunnel_message(address, nonce, timestamp);
    match recover(msg.as_bytes(), signature) {
        Ok(signer) if signer == claimed => Ok(claimed),
        _ => Err(AuthFail::Signature),
    }
}

/// A secp256k1 private key that signs like `personal_sign` (client side, tests).
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// From 32 raw bytes; `None` for zero or out-of-range scalars.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        SigningKey::from_slice(bytes).ok().map(SecretKey)
    }

    /// From `0x`-prefixed or bare hex.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.trim();
        let s = s.strip_prefix("0x").unwrap_or(s);
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        Self::from_bytes(&b)
    }

    /// The raw key as `0x` + 64 hex digits.
    pub fn to_hex(&self) -> String {
        format!("0x{}", hex::encode(self.0.to_bytes()))
    }

    /// The address this key signs for.
    pub fn address(&self) -> Address {
        address_of(self.0.verifying_key())
    }

    /// `0x` + r||s||v hex with v = 27/28, deterministic (RFC 6979).
    pub fn sign_message(&self, message: &[u8]) -> String {
        let (sig, recid) = self
            .0
            .sign_prehash_recoverable(&eip191_hash(message))
            .expect("signing a 32-byte prehash cannot fail");
        let mut raw = [0u8; 65];
        raw[..64].copy_from_slice(&sig.to_bytes());
        raw[64] = 27 + recid.to_byte();
        format!("0x{}", hex::encode(raw))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", to_checksum(&self.address()))
    }
}

#[cfg(test)]
mod tests;
