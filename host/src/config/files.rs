//! Files named in the configuration: what kind of file each may be, reading
//! one without waiting on a fifo or without limit, and how an I/O error
//! about one is said.

use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// The most a conf file may hold.
pub const MAX_CONF_FILE: u64 = 4 << 20;
/// The most a module may hold.
pub const MAX_MODULE: u64 = 512 << 20;

/// What kind of file `meta` is, in words, when it is not a regular file.
fn not_regular(meta: &Metadata) -> Option<&'static str> {
    let kind = meta.file_type();
    Some(if kind.is_file() {
        return None;
    } else if kind.is_dir() {
        "is a directory"
    } else if kind.is_fifo() {
        "is a fifo, not a regular file"
    } else if kind.is_socket() {
        "is a socket, not a regular file"
    } else if kind.is_char_device() || kind.is_block_device() {
        "is a device, not a regular file"
    } else {
        "is not a regular file"
    })
}

/// Opens `path` if it is a regular file, without opening anything else
/// (opening a fifo would wait for a writer).
fn open_regular(path: &Path) -> Result<std::fs::File, String> {
    let meta = std::fs::metadata(path).map_err(|e| io_reason(&e))?;
    if let Some(why) = not_regular(&meta) {
        return Err(why.to_owned());
    }
    std::fs::File::open(path).map_err(|e| io_reason(&e))
}

/// Checks that `path` is a regular file this process can open.
pub fn check_regular(path: &Path) -> Result<(), String> {
    open_regular(path).map(drop)
}

/// Checks that an existing `path` may be written to as a log or pid
/// file: a regular file or a character device (`/dev/null`), not a fifo
/// (opening one would wait for a reader), a socket or a directory.
pub fn check_writable_kind(path: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::metadata(path) else {
        // Made when the server starts.
        return Ok(());
    };
    match not_regular(&meta) {
        Some(_) if meta.file_type().is_char_device() => Ok(()),
        Some(why) => Err(why.to_owned()),
        None => Ok(()),
    }
}

/// Reads the regular file at `path`, at most `limit` bytes: a fifo, a
/// device or a larger file is refused without reading it all.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    open_regular(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_reason(&e))?;
    if bytes.len() as u64 > limit {
        return Err(format!("is larger than {} MiB", limit >> 20));
    }
    Ok(bytes)
}

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

    #[test]
    fn only_regular_files_are_read_and_only_so_much() {
        let dir = std::env::temp_dir().join(format!("ns-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let small = dir.join("small");
        std::fs::write(&small, b"port 1\n").unwrap();
        let big = dir.join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_CONF_FILE + 1)
            .unwrap();
        let cases: &[(&Path, Result<usize, &str>)] = &[
            (&small, Ok(7)),
            (&fifo, Err("is a fifo, not a regular file")),
            (
                Path::new("/dev/zero"),
                Err("is a device, not a regular file"),
            ),
            (Path::new("/tmp"), Err("is a directory")),
            (&big, Err("is larger than 4 MiB")),
            (Path::new("/no/such"), Err("no such file or directory")),
        ];
        for (path, want) in cases {
            let got = read_regular(path, MAX_CONF_FILE).map(|b| b.len());
            assert_eq!(got, want.map_err(str::to_owned), "{}", path.display());
        }
        assert_eq!(check_writable_kind(Path::new("/dev/null")), Ok(()));
        assert_eq!(check_writable_kind(&dir.join("new.log")), Ok(()));
        assert_eq!(
            check_writable_kind(&fifo),
            Err("is a fifo, not a regular file".to_owned())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
