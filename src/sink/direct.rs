//! Writing a large output file straight to the disk.
//!
//! An import file is written once, made durable with `fsync`, and read later by another
//! program: keeping its pages in this machine's page cache helps nobody. On the virtual
//! disks this tool typically runs on, the page cache is also the slow way to the disk:
//! buffered writes followed by `fsync` reached ~375 MB/s where direct writes of the same
//! gigabyte reached ~2 GB/s, and copying into the cache cost the writing thread more CPU
//! than rendering the events.
//!
//! [`DirectWriter`] therefore collects output in aligned chunks, and a second thread writes
//! them in whole blocks with `O_DIRECT` while the next chunk fills; the last partial block
//! goes through the page cache (the caller's `fsync` follows). Where the file system
//! refuses `O_DIRECT` (some network and FUSE file systems), or refuses one write, the rest
//! is written through the page cache, with writeback started every [`WRITEBACK_EVERY`]
//! bytes so that the final `fsync` finds little left to do.

use std::fs::File;
use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;

/// Alignment of direct writes: a multiple of every common logical block size.
const ALIGN: usize = 4096;
/// Bytes collected before a write.
const CHUNK: usize = 2 << 20;
/// Chunks in flight: one being filled while the others are written.
const CHUNKS: usize = 3;
/// In buffered mode, how often writeback of what was written is started.
const WRITEBACK_EVERY: u64 = 16 << 20;

/// `CHUNK` bytes starting at an `ALIGN`ed address.
struct Chunk {
    mem: Vec<u8>,
    start: usize,
}

impl Chunk {
    fn new() -> Self {
        let mem = vec![0u8; CHUNK + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN);
        Chunk { mem, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + CHUNK]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + CHUNK]
    }
}

enum Job {
    /// Write the chunk's first so many bytes (all of it: a multiple of `ALIGN`).
    Write(Chunk, usize),
    /// Write the chunk's first so many bytes, the end of the file.
    Finish(Chunk, usize),
}

/// A writer for a file opened at offset 0 that nobody else writes. A second thread does the
/// writing, so that rendering goes on while a chunk is on its way to the disk. Call
/// [`DirectWriter::finish`] at the end: `flush` cannot write a partial block and does
/// nothing, and dropping the writer unfinished leaves the file incomplete.
pub(crate) struct DirectWriter {
    /// None only once writing failed (see `broken`).
    chunk: Option<Chunk>,
    /// The error writing failed with: every later call returns it again (a CSV writer
    /// flushes once more when dropped after an error).
    broken: Option<(std::io::ErrorKind, String)>,
    len: usize,
    made: usize,
    jobs: Option<SyncSender<Job>>,
    spare: Receiver<Chunk>,
    io: Option<JoinHandle<std::io::Result<bool>>>,
}

impl DirectWriter {
    /// Writes `file` directly when the file system allows it, else through the page cache.
    pub(crate) fn new(file: &File) -> std::io::Result<Self> {
        let file = file.try_clone()?;
        let direct = set_direct(&file, true);
        Self::with_mode(file, direct)
    }

    /// Writes `file` through the page cache.
    #[cfg(test)]
    pub(crate) fn buffered(file: &File) -> std::io::Result<Self> {
        Self::with_mode(file.try_clone()?, false)
    }

    fn with_mode(file: File, direct: bool) -> std::io::Result<Self> {
        let (jobs, todo) = std::sync::mpsc::sync_channel::<Job>(CHUNKS);
        let (done, spare) = std::sync::mpsc::sync_channel::<Chunk>(CHUNKS);
        let io = std::thread::Builder::new()
            .name("write".into())
            .spawn(move || {
                let mut out = Output {
                    file,
                    direct,
                    refused: false,
                    written: 0,
                    writeback_from: 0,
                };
                for job in todo {
                    match job {
                        Job::Write(chunk, n) => {
                            out.write(&chunk.bytes()[..n])?;
                            let _ = done.send(chunk);
                        }
                        Job::Finish(chunk, n) => {
                            let bytes = &chunk.bytes()[..n];
                            let whole = if out.direct { n / ALIGN * ALIGN } else { n };
                            out.write(&bytes[..whole])?;
                            // The last partial block goes through the page cache; and the
                            // descriptor, shared with the caller's, is left as it was.
                            out.buffered();
                            out.write(&bytes[whole..])?;
                            return Ok(direct && !out.refused);
                        }
                    }
                }
                Ok(false) // dropped unfinished
            })?;
        Ok(DirectWriter {
            chunk: Some(Chunk::new()),
            broken: None,
            len: 0,
            made: 1,
            jobs: Some(jobs),
            spare,
            io: Some(io),
        })
    }

    /// Waits for the writing thread: what it returned, or why it returned nothing.
    fn join(&mut self) -> std::io::Result<bool> {
        self.jobs = None;
        match self.io.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(std::io::Error::other(
                "the import file writing thread panicked",
            )),
            None => Err(std::io::Error::other(
                "the import file writing thread stopped",
            )),
        }
    }

    /// Stops the writing thread and keeps its error (or why it stopped) for every later
    /// call.
    fn fail(&mut self) -> std::io::Error {
        self.chunk = None;
        let e = match self.join() {
            Err(e) => e,
            Ok(_) => std::io::Error::other("the import file writing thread stopped"),
        };
        self.broken = Some((e.kind(), e.to_string()));
        e
    }

    /// The error writing failed with, again.
    fn check(&self) -> std::io::Result<()> {
        match &self.broken {
            Some((kind, message)) => Err(std::io::Error::new(*kind, message.clone())),
            None => Ok(()),
        }
    }

    /// Hands the full chunk to the writing thread and takes an empty one.
    fn hand_over(&mut self) -> std::io::Result<()> {
        self.check()?;
        let (Some(chunk), Some(jobs)) = (self.chunk.take(), self.jobs.as_ref()) else {
            return Err(self.fail());
        };
        if jobs.send(Job::Write(chunk, CHUNK)).is_err() {
            return Err(self.fail());
        }
        let next = if self.made < CHUNKS {
            self.made += 1;
            Chunk::new()
        } else {
            match self.spare.recv() {
                Ok(c) => c,
                Err(_) => return Err(self.fail()),
            }
        };
        self.chunk = Some(next);
        self.len = 0;
        Ok(())
    }

    /// Writes everything collected and waits for it; the file then needs only its
    /// `fsync`. Tells whether every whole block went straight to the disk.
    pub(crate) fn finish(mut self) -> std::io::Result<bool> {
        self.check()?;
        let (Some(chunk), Some(jobs)) = (self.chunk.take(), self.jobs.as_ref()) else {
            return Err(self.fail());
        };
        if jobs.send(Job::Finish(chunk, self.len)).is_err() {
            return Err(self.fail());
        }
        self.join()
    }
}

impl Drop for DirectWriter {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(io) = self.io.take() {
            let _ = io.join();
        }
    }
}

impl Write for DirectWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.len == CHUNK {
            self.hand_over()?;
        }
        self.check()?;
        let n = data.len().min(CHUNK - self.len);
        let at = self.len;
        let Some(chunk) = self.chunk.as_mut() else {
            return Err(self.fail());
        };
        chunk.bytes_mut()[at..at + n].copy_from_slice(&data[..n]);
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

/// The writing thread's side: the file and how it is written.
struct Output {
    file: File,
    direct: bool,
    /// A direct write was refused: the rest went through the page cache.
    refused: bool,
    written: u64,
    writeback_from: u64,
}

impl Output {
    fn buffered(&mut self) {
        if self.direct {
            set_direct(&self.file, false);
            self.direct = false;
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut done = 0;
        while done < bytes.len() {
            match (&self.file).write(&bytes[done..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(k) => done += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Refused (a file system without direct I/O for this file, or a short write
                // that left the offset unaligned): the rest goes through the page cache.
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.buffered();
                    self.refused = true;
                }
                Err(e) => return Err(e),
            }
        }
        self.written += bytes.len() as u64;
        if !self.direct && self.written - self.writeback_from >= WRITEBACK_EVERY {
            start_writeback(&self.file, self.writeback_from, self.written);
            self.writeback_from = self.written;
        }
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

    fn write_through(w: &mut DirectWriter, data: &[u8], sizes: &[usize]) {
        let mut at = 0;
        for &n in sizes {
            w.write_all(&data[at..at + n]).unwrap();
            at += n;
        }
    }

    #[test]
    fn the_file_holds_exactly_what_was_written_in_either_mode() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [0, 1, ALIGN, CHUNK, CHUNK + 1, 3 * CHUNK, 7 * CHUNK + 12_345];
        for (i, total) in sizes.into_iter().enumerate() {
            let (data, sizes) = pieces(total, i as u64 + 1);
            for direct in [true, false] {
                let path = dir.path().join(format!("f{i}{direct}"));
                let file = File::create(&path).unwrap();
                let mut w = if direct {
                    DirectWriter::new(&file).unwrap()
                } else {
                    DirectWriter::buffered(&file).unwrap()
                };
                write_through(&mut w, &data, &sizes);
                let went_direct = w.finish().unwrap();
                assert!(direct || !went_direct);
                #[cfg(target_os = "linux")]
                {
                    use std::os::fd::AsRawFd;
                    // SAFETY: reads the flags of a descriptor `file` keeps open.
                    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
                    assert_eq!(flags & libc::O_DIRECT, 0, "the descriptor is left buffered");
                }
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
        let mut w = DirectWriter::new(&file).unwrap();
        write_through(&mut w, &data, &sizes);
        assert!(
            !w.finish().unwrap(),
            "the refused writes went through the page cache"
        );
        let mut want = b"header\n".to_vec();
        want.extend_from_slice(&data);
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn writes_after_an_error_fail_with_it_again() {
        // A CSV writer flushes once more when it is dropped after an error.
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let w = DirectWriter::buffered(&full).unwrap();
        let mut csv = csv::Writer::from_writer(w);
        let record = ["x".repeat(1000)];
        let err = (0..(CHUNKS + 2) * CHUNK / 1000)
            .find_map(|_| csv.write_record(&record).err())
            .expect("the disk is full");
        assert!(err.to_string().contains("No space left"), "{err}");
        let again = csv.flush().unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::StorageFull, "{again}");
        drop(csv); // flushes again: no panic
    }

    #[test]
    fn a_write_error_reaches_the_writer() {
        // /dev/full fails every write with ENOSPC.
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let mut w = DirectWriter::buffered(&full).unwrap();
        let mut failed = None;
        for _ in 0..(CHUNKS + 2) * CHUNK / 4096 {
            if let Err(e) = w.write_all(&[b'x'; 4096]) {
                failed = Some(e);
                break;
            }
        }
        let err = match failed {
            Some(e) => e,
            None => w.finish().unwrap_err(),
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    }
}
