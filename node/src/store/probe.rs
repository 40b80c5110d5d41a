//! A look at an existing store file that changes none of its bytes: its
//! integrity and its schema version and `written_by`, read before the file
//! is opened for writing, so a store of a newer shoal is refused untouched.

use std::fs;
use std::path::Path;

use redb::backends::FileBackend;
use redb::{Builder, ReadableDatabase};

use super::error::{At, StoreError, classify};
use super::schema::{META, read_schema, read_written_by};

/// The store file seen through a layer that keeps every write in memory.
///
/// redb writes to a file as soon as it opens it read-write (its header, the
/// allocator state at close), and its read-only open does not verify
/// checksums, so it cannot be trusted with a damaged file. A file is first
/// opened read-write, integrity checked, through this layer: the schema
/// version is read without a byte of the file changed. Locks go to the file,
/// so a running daemon is still detected.
#[derive(Debug)]
struct ProbeBackend {
    file: FileBackend,
    overlay: std::sync::Mutex<Overlay>,
}

#[derive(Debug)]
struct Overlay {
    /// The length redb set (the file's until it sets one).
    len: u64,
    /// File bytes at or past this offset read as zero (redb shrank the
    /// storage below it at some point).
    file_valid: u64,
    /// Writes, oldest first.
    writes: Vec<(u64, Vec<u8>)>,
}

impl ProbeBackend {
    fn new(file: fs::File) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            file: FileBackend::new(file).map_err(std::io::Error::other)?,
            overlay: std::sync::Mutex::new(Overlay {
                len,
                file_valid: len,
                writes: Vec::new(),
            }),
        })
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn out_of_range() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "read past the end of the store",
    )
}

impl redb::StorageBackend for ProbeBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.overlay().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let o = self.overlay();
        let n = out.len() as u64;
        let end = offset.checked_add(n).ok_or_else(out_of_range)?;
        if end > o.len {
            return Err(out_of_range());
        }
        let from_file = usize::try_from(o.file_valid.saturating_sub(offset).min(n))
            .map_err(|_| out_of_range())?;
        if from_file > 0 {
            self.file.read(offset, &mut out[..from_file])?;
        }
        out[from_file..].fill(0);
        for (at, data) in &o.writes {
            let w_end = at + data.len() as u64;
            if *at >= end || w_end <= offset {
                continue;
            }
            let start = (*at).max(offset);
            let stop = w_end.min(end);
            let (dst, src) = ((start - offset) as usize, (start - at) as usize);
            let len = (stop - start) as usize;
            out[dst..dst + len].copy_from_slice(&data[src..src + len]);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut o = self.overlay();
        if len < o.len {
            o.file_valid = o.file_valid.min(len);
            o.writes.retain(|(at, _)| *at < len);
            for (at, data) in &mut o.writes {
                let keep = usize::try_from(len - *at).unwrap_or(usize::MAX);
                data.truncate(keep);
            }
        }
        o.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut o = self.overlay();
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(out_of_range)?;
        if end > o.len {
            return Err(out_of_range());
        }
        o.writes.push((offset, data.to_vec()));
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }

    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.file.query_lock_range(start, end)
    }
}

/// The schema version and `written_by` of an existing, non-empty store
/// file, read through a [`ProbeBackend`] so the file is not changed, after
/// an integrity check. `Ok(None)` for a missing or empty file, or one
/// without `meta_v1` (the read-write open then judges it).
pub(super) fn probe_schema(path: &Path) -> Result<Option<(u32, Option<String>)>, StoreError> {
    let file = match fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    if file.metadata().map_err(io)?.len() == 0 {
        return Ok(None);
    }
    let backend = ProbeBackend::new(file).map_err(io)?;
    let mut builder = Builder::new();
    builder.set_check_integrity_on_open(true);
    let db = builder.create_with_backend(backend).at(path)?;
    let txn = db.begin_read().at(path)?;
    let meta = match txn.open_table(META) {
        Ok(m) => m,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(classify(path, e.into())),
    };
    Ok(Some((
        read_schema(&meta, path)?,
        read_written_by(&meta, path)?,
    )))
}
