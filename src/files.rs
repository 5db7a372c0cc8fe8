//! Opening files whose names come from callers, policy texts or a caller's `sys_root`: never
//! blocking, and only of the expected type. Opening a FIFO for reading waits for a writer
//! forever, and for writing waits for a reader (issue 17, item 7), so every open here uses
//! O_NONBLOCK and checks the type of what it opened before any read or write.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a path must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    RegularFile,
    /// A device node (the NPU's `/dev/accel/accelN`), or a regular file standing in for one
    /// in a fake tree (its ioctls then fail cleanly); never a FIFO, socket or directory.
    CharDevice,
}

fn type_name(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "a regular file"
    }
}

fn check(t: std::fs::FileType, expect: Expect) -> io::Result<()> {
    let ok = match expect {
        Expect::RegularFile => t.is_file(),
        Expect::CharDevice => t.is_char_device() || t.is_file(),
    };
    if ok {
        return Ok(());
    }
    let want = if expect == Expect::RegularFile { "a regular file" } else { "a character device" };
    Err(io::Error::new(io::ErrorKind::InvalidInput, format!("is {}, not {want}", type_name(t))))
}

/// The flags of every open. Miri's file system refuses O_NONBLOCK ("unsupported flags
/// 0x800"), which stopped `.ci/sanitizers miri` in the policy include tests; its tests open
/// only regular files, and the type checks below still run there.
const OPEN_FLAGS: i32 = if cfg!(miri) { libc::O_CLOEXEC } else { libc::O_NONBLOCK | libc::O_CLOEXEC };

/// Opens `path` with `options` plus O_NONBLOCK and checks that it is what `expect` says.
pub fn open(path: &Path, options: &mut OpenOptions, expect: Expect) -> io::Result<File> {
    // A FIFO opened for writing without a reader fails with ENXIO: say what it is instead.
    if let Ok(meta) = std::fs::metadata(path) {
        check(meta.file_type(), expect)?;
    }
    let file = options.custom_flags(OPEN_FLAGS).open(path)?;
    check(file.metadata()?.file_type(), expect)?;
    Ok(file)
}

/// A regular file opened for reading.
pub fn open_regular(path: &Path) -> io::Result<File> {
    open(path, OpenOptions::new().read(true), Expect::RegularFile)
}

/// At most `max` bytes of a regular file (one more, to tell a larger file apart).
pub fn read_limited(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_regular(path)?.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The whole of a regular file.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_regular(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

pub fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "is not UTF-8 text"))
}

/// Creates or truncates a regular file and writes `bytes` (never into a FIFO or device).
pub fn write_regular(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file =
        open(path, OpenOptions::new().write(true).create(true).truncate(true), Expect::RegularFile)?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn fifo(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("fifo");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        path
    }

    #[test]
    fn fifos_and_directories_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = fifo(dir.path());
        let t = Instant::now();
        let err = read(&f).unwrap_err();
        assert!(err.to_string().contains("is a FIFO, not a regular file"), "{err}");
        let err = write_regular(&f, b"x").unwrap_err();
        assert!(err.to_string().contains("is a FIFO"), "{err}");
        let err = open(&f, OpenOptions::new().read(true), Expect::CharDevice).unwrap_err();
        assert!(err.to_string().contains("not a character device"), "{err}");
        assert!(read(dir.path()).unwrap_err().to_string().contains("is a directory"));
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn regular_files_read_and_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_regular(&p, b"hello").unwrap();
        assert_eq!(read(&p).unwrap(), b"hello");
        assert_eq!(read_limited(&p, 2).unwrap(), b"hel");
        assert!(open(Path::new("/dev/null"), OpenOptions::new().read(true), Expect::CharDevice).is_ok());
        // A fake tree's stand-in for a device node opens; its ioctls fail (ENOTTY).
        assert!(open(&p, OpenOptions::new().read(true), Expect::CharDevice).is_ok());
    }
}
