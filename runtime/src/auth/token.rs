//! The API key format: `ck_<id>_<secret>`, with a 16-hex-digit id (it names
//! the key in lists, logs and the audit) and a 64-hex-digit secret (256
//! random bits). Only blake3 of the secret is stored; a high-entropy secret
//! needs no slow password hash, and comparing `blake3::Hash` values is
//! constant-time.

use crate::error::{Error, Result};
use chacha20poly1305::aead::OsRng;
use chacha20poly1305::aead::rand_core::RngCore;

const PREFIX: &str = "ck_";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;

/// A key as a client sends it, split into its parts.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The key's id.
    pub id: String,
    secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}, <secret>)", self.id)
    }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    OsRng.fill_bytes(&mut b);
    crate::util::hex(&b)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Token {
    /// A fresh key with a new id.
    pub fn generate() -> Token {
        Token::with_id(random_hex(ID_HEX / 2))
    }

    /// A fresh secret for an existing id (rotation).
    pub fn with_id(id: String) -> Token {
        Token {
            id,
            secret: random_hex(SECRET_HEX / 2),
        }
    }

    /// Parses a key; the message never repeats the key.
    pub fn parse(s: &str) -> Result<Token> {
        let bad = || {
            Error::unauthenticated(
                "the API key is malformed: give the whole `ck_<id>_<secret>` a key was created with",
            )
        };
        let rest = s.trim().strip_prefix(PREFIX).ok_or_else(bad)?;
        let (id, secret) = rest.split_once('_').ok_or_else(bad)?;
        if !is_hex(id, ID_HEX) || !is_hex(secret, SECRET_HEX) {
            return Err(bad());
        }
        Ok(Token {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// What is stored: blake3 of the secret.
    pub fn hash(&self) -> blake3::Hash {
        blake3::hash(self.secret.as_bytes())
    }

    /// The key as text, to hand to its owner once.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}{}_{}", self.id, self.secret)
    }
}

/// Whether `id` is a well-formed key id.
pub fn valid_id(id: &str) -> bool {
    is_hex(id, ID_HEX)
}

/// Whether a stored hash matches `token` (constant-time).
pub fn matches(stored: &[u8], token: &Token) -> bool {
    <[u8; 32]>::try_from(stored).is_ok_and(|h| blake3::Hash::from(h) == token.hash())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_malformed_ones_are_refused() {
        let t = Token::generate();
        let text = t.reveal();
        assert_eq!(text.len(), 3 + 16 + 1 + 64);
        let back = Token::parse(&text).unwrap();
        assert_eq!(back, t);
        assert!(matches(t.hash().as_bytes(), &back));
        assert!(!matches(Token::generate().hash().as_bytes(), &back));
        assert!(!matches(b"short", &back));
        let rotated = Token::with_id(t.id.clone());
        assert_eq!(rotated.id, t.id);
        assert_ne!(rotated.hash(), t.hash());
        for bad in [
            "",
            "ck_",
            "Bearer x",
            &text[1..],
            &text[..text.len() - 1],
            &text.to_uppercase(),
            &format!("{text}0"),
        ] {
            let e = Token::parse(bad).unwrap_err();
            assert!(!e.message.contains(&t.reveal()[20..]), "{e:?}");
        }
        assert!(!format!("{t:?}").contains(&text[20..]));
    }
}
