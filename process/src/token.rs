//! The shared secret that lets ctl and the HTTP API talk to a controller
//! (`Authorization: Bearer <token>`). It is read from a file, compared in constant time,
//! and never printed: its `Debug` says only that it is there.

use std::fmt;
use std::path::Path;

pub struct Token(String);

impl Token {
    /// The token in `path`: its contents without surrounding whitespace.
    pub fn from_file(path: &Path) -> Result<Token, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        Token::new(text.trim()).ok_or_else(|| format!("the token file {} is empty", path.display()))
    }

    /// A token from its text (`None` when empty).
    pub fn new(text: &str) -> Option<Token> {
        let text = text.trim();
        (!text.is_empty()).then(|| Token(text.to_string()))
    }

    /// The `Authorization` header value that presents it.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `Authorization` header value presents this token. Every byte is
    /// compared whatever differs first, so the time taken says nothing about the token.
    pub fn accepts(&self, authorization: &str) -> bool {
        let Some(presented) = authorization.strip_prefix("Bearer ") else { return false };
        let (a, b) = (presented.trim().as_bytes(), self.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_accepted_only_exactly_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret-value\n").unwrap();
        let token = Token::from_file(&path).unwrap();
        assert!(token.accepts("Bearer s3cret-value"));
        for wrong in ["Bearer s3cret-valuE", "Bearer s3cret", "s3cret-value", "Basic s3cret-value", ""] {
            assert!(!token.accepts(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        std::fs::write(&path, " \n").unwrap();
        assert!(Token::from_file(&path).unwrap_err().contains("is empty"));
        assert!(Token::from_file(&dir.path().join("none")).unwrap_err().contains("cannot read the token file"));
    }
}
