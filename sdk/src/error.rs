//! The error a hook returns.

use std::error::Error as StdError;
use std::fmt;

/// Why [`Handler::process_request`](crate::Handler::process_request) failed.
///
/// The host logs it at level `err` as the reason the connection ended.
/// Anything `Box<dyn std::error::Error + Send + Sync>` converts from converts
/// into an `Error`, so `?` works on [`std::io::Error`] and every other error
/// type, and a message is one `.into()` away:
///
/// ```
/// use netserver_sdk::Error;
///
/// fn check(line: &str) -> Result<u16, Error> {
///     if line.is_empty() {
///         return Err("empty request".into());
///     }
///     let port: u16 = line.parse()?; // a ParseIntError
///     Ok(port)
/// }
///
/// assert_eq!(check("").unwrap_err().to_string(), "empty request");
/// assert_eq!(check("x").unwrap_err().to_string(), "invalid digit found in string");
/// assert_eq!(check("80").unwrap(), 80);
/// ```
///
/// Like `anyhow::Error`, it does not implement [`std::error::Error`] itself:
/// that is what lets it convert from every type that does.
pub struct Error(Box<dyn StdError + Send + Sync + 'static>);

impl<E> From<E> for Error
where
    E: Into<Box<dyn StdError + Send + Sync + 'static>>,
{
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl Error {
    /// The underlying error.
    pub fn get_ref(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.0
    }
}

/// The error's message followed by its sources, each after `": "`.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[derive(Debug)]
    struct Outer(io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("reading the request")
        }
    }

    impl StdError for Outer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    fn fails_with_io() -> Result<(), Error> {
        Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "client went away",
        ))?
    }

    #[test]
    fn converts_from_strings_and_errors() {
        assert_eq!(Error::from("a str").to_string(), "a str");
        assert_eq!(
            Error::from(String::from("a string")).to_string(),
            "a string"
        );
        assert_eq!(fails_with_io().unwrap_err().to_string(), "client went away");
    }

    #[test]
    fn display_includes_the_source_chain() {
        let inner = io::Error::other("connection reset");
        let error = Error::from(Outer(inner));
        assert_eq!(error.to_string(), "reading the request: connection reset");
        assert!(error.get_ref().source().is_some());
    }
}
