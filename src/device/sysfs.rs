//! One root for every sysfs, procfs and /dev access, so tests can point the whole device layer
//! at a temporary tree laid out like the real one.

use crate::error::{Error, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The directory that stands for `/`. `SysRoot::real()` is `/` itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysRoot(pub PathBuf);

impl SysRoot {
    pub fn real() -> SysRoot {
        SysRoot(PathBuf::from("/"))
    }

    pub fn new(root: impl Into<PathBuf>) -> SysRoot {
        SysRoot(root.into())
    }

    /// Where the absolute system path `abs` (e.g. `/sys/class/thermal`) lies under this root.
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        self.0.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    /// The real path of `abs` under this root for a write, refused when a symlink leads out of
    /// the root (a caller's tree must not make the library write elsewhere). Reads follow the
    /// tree's links, as in the real sysfs, but only ever read regular files.
    fn resolve_for_write(&self, abs: impl AsRef<Path>) -> std::io::Result<PathBuf> {
        let path = self.path(abs);
        if self.0 == Path::new("/") {
            return Ok(path);
        }
        let (real, root) = (fs::canonicalize(&path)?, fs::canonicalize(&self.0)?);
        if !real.starts_with(&root) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("leads out of the system root {} (to {})", self.0.display(), real.display()),
            ));
        }
        Ok(real)
    }

    fn read_file(&self, abs: impl AsRef<Path>) -> std::io::Result<String> {
        crate::files::read_to_string(&self.path(abs))
    }

    /// Contents of a file with surrounding whitespace removed, or `None` when it cannot be read
    /// (sensors come and go; a missing file is not an error for a reader). Regular files
    /// only: a FIFO in a caller's tree would block the reader for ever.
    pub fn read(&self, abs: impl AsRef<Path>) -> Option<String> {
        self.read_file(abs).ok().map(|s| s.trim().to_string())
    }

    pub fn read_i64(&self, abs: impl AsRef<Path>) -> Option<i64> {
        self.read(abs)?.parse().ok()
    }

    /// Like `read`, but a missing or unreadable file is an error naming the path.
    pub fn read_required(&self, abs: impl AsRef<Path>) -> Result<String> {
        let path = self.path(&abs);
        self.read_file(&abs).map(|s| s.trim().to_string()).map_err(|e| io_error("read", &path, e))
    }

    /// Writes `value` to an existing attribute file (sysfs files are never created).
    pub fn write(&self, abs: impl AsRef<Path>, value: &str) -> Result<()> {
        let path = self.path(&abs);
        let real = self.resolve_for_write(&abs).map_err(|e| io_error("open for writing", &path, e))?;
        let mut file = crate::files::open(
            &real,
            fs::OpenOptions::new().write(true).truncate(true),
            crate::files::Expect::RegularFile,
        )
        .map_err(|e| io_error("open for writing", &path, e))?;
        file.write_all(value.as_bytes()).map_err(|e| io_error("write", &path, e))
    }

    pub fn exists(&self, abs: impl AsRef<Path>) -> bool {
        self.path(abs).exists()
    }

    /// Names of the entries of a directory that start with `prefix`, sorted naturally
    /// (`hwmon2` before `hwmon10`). A missing directory has no entries.
    pub fn list(&self, abs_dir: impl AsRef<Path>, prefix: &str) -> Vec<String> {
        let Ok(dir) = fs::read_dir(self.path(abs_dir)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort_by_key(|n| natural_key(n));
        names
    }

    /// The final component of a symlink's target (e.g. the driver name behind
    /// `/sys/class/drm/card0/device/driver`).
    pub fn link_name(&self, abs: impl AsRef<Path>) -> Option<String> {
        let target = fs::read_link(self.path(abs)).ok()?;
        target.file_name()?.to_str().map(str::to_string)
    }
}

/// Splits a trailing number off so `card10` sorts after `card9`.
fn natural_key(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, num) = name.split_at(name.len() - digits);
    (stem.to_string(), num.parse().unwrap_or(0))
}

/// An I/O error that names the refused path; permission errors keep their own status.
pub(crate) fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    let msg = format!("{what} {}: {e}", path.display());
    // A read-only mount refuses a change just as file permissions do.
    if e.kind() == std::io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EROFS) {
        Error::Permission(msg)
    } else {
        Error::Io(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_under_the_root_and_reads_trim() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        assert_eq!(root.path("/sys/class"), dir.path().join("sys/class"));
        fs::create_dir_all(root.path("/sys/x")).unwrap();
        fs::write(root.path("/sys/x/temp"), "45000\n").unwrap();
        assert_eq!(root.read_i64("/sys/x/temp"), Some(45000));
        assert_eq!(root.read("/sys/x/missing"), None);
        let err = root.read_required("/sys/x/missing").unwrap_err();
        assert!(err.to_string().contains("sys/x/missing"), "{err}");
    }

    #[test]
    fn write_does_not_create_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        let err = root.write("/sys/nothing", "1").unwrap_err();
        assert!(matches!(err, Error::Io(_)), "{err:?}");
        assert!(!root.exists("/sys/nothing"));
    }

    /// Issue 17, item 7: a FIFO in a caller's tree is not read (it would block for ever), and
    /// a write does not follow a symlink out of the root.
    #[test]
    fn fifos_and_symlinks_out_of_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path().join("root"));
        fs::create_dir_all(root.path("/sys/x")).unwrap();
        let fifo = std::ffi::CString::new(root.path("/sys/x/temp").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let t = std::time::Instant::now();
        assert_eq!(root.read("/sys/x/temp"), None);
        let err = root.read_required("/sys/x/temp").unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert!(root.write("/sys/x/temp", "1").is_err());
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        // A file outside the root, reached through a symlink inside it.
        fs::write(dir.path().join("secret"), "42").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.path("/sys/x/link")).unwrap();
        let err = root.write("/sys/x/link", "7").unwrap_err();
        assert!(err.to_string().contains("leads out of the system root"), "{err}");
        assert_eq!(fs::read_to_string(dir.path().join("secret")).unwrap(), "42");
        // Links inside the root are followed, as in the real sysfs.
        fs::write(root.path("/sys/x/real"), "5").unwrap();
        std::os::unix::fs::symlink("real", root.path("/sys/x/inside")).unwrap();
        assert_eq!(root.read_i64("/sys/x/inside"), Some(5));
    }

    #[test]
    fn list_sorts_naturally() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        for n in ["hwmon10", "hwmon2", "hwmon0", "other"] {
            fs::create_dir_all(root.path(format!("/sys/class/hwmon/{n}"))).unwrap();
        }
        assert_eq!(root.list("/sys/class/hwmon", "hwmon"), ["hwmon0", "hwmon2", "hwmon10"]);
        assert!(root.list("/sys/none", "").is_empty());
    }
}
