//! Names that clients register and call (`alice`, `bob.office`, `+4930123`).

use std::fmt;

/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A validated name: 1 to 64 bytes of ASCII letters, digits and `._+-`, not
/// starting with `.` or `-`. The restricted set keeps names safe to put in
/// dialplans, logs and SQL without escaping.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

/// Why a string is not a valid [`Name`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("name is {len} bytes long, at most {MAX_NAME_LEN} allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character outside the allowed set.
    #[error("name has {ch:?} at position {pos}; allowed are letters, digits and . _ + -")]
    BadChar {
        /// The offending character.
        ch: char,
        /// Its byte position.
        pos: usize,
    },
    /// The name starts with `.` or `-`.
    #[error("name may not start with '.' or '-'")]
    BadStart,
}

/// Checks a name against the rules of [`Name`].
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    if let Some((pos, ch)) = name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')))
    {
        return Err(NameError::BadChar { ch, pos });
    }
    if name.starts_with(['.', '-']) {
        return Err(NameError::BadStart);
    }
    Ok(())
}

impl Name {
    /// Validates and wraps a name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        validate_name(name).map(|()| Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Name::new(s)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(Name::new("alice").is_ok());
        assert!(Name::new("+4930_1.x-y").is_ok());
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert_eq!(Name::new(".a"), Err(NameError::BadStart));
        assert_eq!(Name::new("-a"), Err(NameError::BadStart));
        assert_eq!(
            Name::new("a b"),
            Err(NameError::BadChar { ch: ' ', pos: 1 })
        );
        assert_eq!(
            Name::new(&"a".repeat(65)),
            Err(NameError::TooLong { len: 65 })
        );
        assert!(Name::new(&"a".repeat(64)).is_ok());
        assert!(Name::new("ä").is_err());
    }
}
