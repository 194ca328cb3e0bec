//! Writing a large output file straight to the disk.
//!
//! An import file is written once, made durable with `fsync`, and read later by another
//! program: keeping its pages in this machine's page cache helps nobody. On the virtual
//! disks this tool typically runs on, the page cache is also the slow way to the disk:
//! buffered writes followed by `fsync` reached ~375 MB/s where direct writes of the same
//! gigabyte reached ~2 GB/s, and copying into the cache cost the writing thread more CPU
//! than rendering the events.
//!
//! [`DirectWriter`] therefore collects output in an aligned buffer and writes it in whole
//! blocks with `O_DIRECT`; the last partial block goes through the page cache (the caller's
//! `fsync` follows). Where the file system refuses `O_DIRECT` (some network and FUSE file
//! systems), or refuses one write, it goes on with buffered writes, starting writeback every
//! [`WRITEBACK_EVERY`] bytes so the final `fsync` finds little left to do.

use std::fs::File;
use std::io::Write;

/// Alignment of direct writes: a multiple of every common logical block size.
const ALIGN: usize = 4096;
/// Bytes collected before a write.
const CHUNK: usize = 4 << 20;
/// In buffered mode, how often writeback of what was written is started.
const WRITEBACK_EVERY: u64 = 16 << 20;

/// A writer for a file opened at offset 0 that nobody else writes. Call
/// [`DirectWriter::finish`] at the end: `flush` cannot write a partial block and does nothing.
pub(crate) struct DirectWriter<'f> {
    file: &'f File,
    /// `CHUNK + ALIGN` bytes, never reallocated; the chunk starts at `start`.
    buf: Vec<u8>,
    start: usize,
    len: usize,
    direct: bool,
    written: u64,
    writeback_from: u64,
}

impl<'f> DirectWriter<'f> {
    /// Writes `file` directly when the file system allows it, else through the page cache.
    pub(crate) fn new(file: &'f File) -> Self {
        let direct = set_direct(file, true);
        Self::with_mode(file, direct)
    }

    /// Writes `file` through the page cache.
    #[cfg(test)]
    pub(crate) fn buffered(file: &'f File) -> Self {
        Self::with_mode(file, false)
    }

    fn with_mode(file: &'f File, direct: bool) -> Self {
        let buf = vec![0u8; CHUNK + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN);
        DirectWriter {
            file,
            buf,
            start,
            len: 0,
            direct,
            written: 0,
            writeback_from: 0,
        }
    }

    /// Whether writes still bypass the page cache.
    #[cfg(test)]
    pub(crate) fn is_direct(&self) -> bool {
        self.direct
    }

    /// Writes the first `n` collected bytes (a multiple of [`ALIGN`] unless buffered).
    fn write_out(&mut self, n: usize) -> std::io::Result<()> {
        let mut done = 0;
        while done < n {
            let part = &self.buf[self.start + done..self.start + n];
            match (&mut &*self.file).write(part) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(k) => done += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Refused (a file system without direct I/O for this file, or a short write
                // that left the offset unaligned): the rest goes through the page cache.
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    set_direct(self.file, false);
                    self.direct = false;
                }
                Err(e) => return Err(e),
            }
        }
        self.buf
            .copy_within(self.start + n..self.start + self.len, self.start);
        self.len -= n;
        self.written += n as u64;
        if !self.direct && self.written - self.writeback_from >= WRITEBACK_EVERY {
            start_writeback(self.file, self.writeback_from, self.written);
            self.writeback_from = self.written;
        }
        Ok(())
    }

    /// Writes everything collected; the file then needs only its `fsync`.
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        if self.direct {
            let whole = self.len / ALIGN * ALIGN;
            if whole > 0 {
                self.write_out(whole)?;
            }
            if self.len > 0 && self.direct {
                set_direct(self.file, false);
                self.direct = false;
            }
        }
        if self.len > 0 {
            self.write_out(self.len)?;
        }
        Ok(())
    }
}

impl Write for DirectWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.len == CHUNK {
            self.write_out(CHUNK)?;
        }
        let n = data.len().min(CHUNK - self.len);
        let at = self.start + self.len;
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        Ok(n)
    }

    fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let n = self.write(data)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Nothing: only [`DirectWriter::finish`] may write a partial block.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Turns `O_DIRECT` on or off for `file`; whether that worked.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: plain fcntl calls on a descriptor `file` keeps open.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return false;
        }
        let flags = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        libc::fcntl(fd, libc::F_SETFL, flags) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, _on: bool) -> bool {
    false
}

/// Starts writeback of `from..to` (only a hint: the caller's `fsync` still follows).
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor; it only schedules writeback of pages
    // already written, and its failure is harmless.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            (to - from) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _from: u64, _to: u64) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes and piece sizes (a small LCG).
    fn pieces(total: usize, seed: u64) -> (Vec<u8>, Vec<usize>) {
        let mut x = seed;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize
        };
        let data: Vec<u8> = (0..total).map(|_| next() as u8).collect();
        let mut sizes = Vec::new();
        let mut left = total;
        while left > 0 {
            // Mostly short lines, sometimes more than a whole chunk at once.
            let n = match next() % 10 {
                0 => next() % (CHUNK + CHUNK / 2),
                1 => ALIGN,
                _ => next() % 2000,
            }
            .clamp(1, left);
            sizes.push(n);
            left -= n;
        }
        (data, sizes)
    }

    fn write_through(w: &mut DirectWriter<'_>, data: &[u8], sizes: &[usize]) {
        let mut at = 0;
        for &n in sizes {
            w.write_all(&data[at..at + n]).unwrap();
            at += n;
        }
    }

    #[test]
    fn the_file_holds_exactly_what_was_written_in_either_mode() {
        let dir = tempfile::tempdir().unwrap();
        for (i, total) in [0, 1, ALIGN, CHUNK, CHUNK + 1, 3 * CHUNK + 12_345]
            .into_iter()
            .enumerate()
        {
            let (data, sizes) = pieces(total, i as u64 + 1);
            for direct in [true, false] {
                let path = dir.path().join(format!("f{i}{direct}"));
                let file = File::create(&path).unwrap();
                let mut w = if direct {
                    DirectWriter::new(&file)
                } else {
                    DirectWriter::buffered(&file)
                };
                write_through(&mut w, &data, &sizes);
                w.finish().unwrap();
                file.sync_all().unwrap();
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    data,
                    "{total} bytes, direct {direct}"
                );
            }
        }
    }

    #[test]
    fn a_refused_direct_write_goes_on_through_the_page_cache() {
        // An unaligned file offset makes the kernel refuse direct writes with EINVAL, as a
        // file system without direct I/O does.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"header\n").unwrap();
        let (data, sizes) = pieces(2 * CHUNK + 777, 9);
        let mut w = DirectWriter::new(&file);
        let was_direct = w.is_direct();
        write_through(&mut w, &data, &sizes);
        assert!(
            !w.is_direct(),
            "the refused write switched to buffered mode"
        );
        w.finish().unwrap();
        let mut want = b"header\n".to_vec();
        want.extend_from_slice(&data);
        assert_eq!(std::fs::read(&path).unwrap(), want);
        // Where the file system had direct I/O at all, the switch really was exercised.
        if !was_direct {
            eprintln!("no O_DIRECT on this file system: the fallback was the only mode");
        }
    }
}
