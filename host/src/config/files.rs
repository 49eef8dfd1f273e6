//! Files named in the configuration: how an I/O error about one is said.

/// An I/O error in words, without the `(os error N)` tail.
pub fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::IsADirectory => "is a directory".to_owned(),
        _ => {
            let text = err.to_string();
            match text.find(" (os error") {
                Some(at) => text[..at].to_owned(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn reasons_in_words() {
        let cases = [
            (
                Error::from(ErrorKind::NotFound),
                "no such file or directory",
            ),
            (
                Error::from(ErrorKind::PermissionDenied),
                "permission denied",
            ),
            (Error::from_raw_os_error(21), "is a directory"),
            (Error::from_raw_os_error(6), "No such device or address"),
        ];
        for (err, want) in cases {
            assert_eq!(io_reason(&err), want);
        }
    }
}
