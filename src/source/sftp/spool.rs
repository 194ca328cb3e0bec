//! The local end of a download over one connection.
//!
//! Invariant: memory stays at [`SPOOL_BUFFERS`] read buffers whatever the file's size, and
//! the SHA-256 returned is that of exactly the bytes written, in order.

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use anyhow::{Result, anyhow};
use sha2::{Digest, Sha256};

use super::READ_BUFFER;
use crate::sftp::Final;

/// The local end of a download: a thread that writes and hashes the chunks
/// the SFTP reader hands it, so that the reader's thread (which decrypts) never waits for
/// the disk or the hash. Buffers go round between the two: memory stays at [`SPOOL_BUFFERS`]
/// read buffers whatever the file's size.
pub(super) struct Spool {
    to_writer: Option<SyncSender<(Vec<u8>, usize)>>,
    returned: Receiver<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    writer: Option<JoinHandle<Result<String>>>,
}

/// Read buffers in circulation per download.
const SPOOL_BUFFERS: usize = 3;

impl Spool {
    pub(super) fn start(mut file: std::fs::File) -> Spool {
        let (to_writer, chunks) = sync_channel::<(Vec<u8>, usize)>(SPOOL_BUFFERS);
        let (give_back, returned) = channel::<Vec<u8>>();
        let writer = std::thread::spawn(move || -> Result<String> {
            let mut hasher = Sha256::new();
            for (buf, n) in chunks {
                file.write_all(&buf[..n])
                    .map_err(|e| anyhow!(Final(format!("cannot write the download: {e}"))))?;
                hasher.update(&buf[..n]);
                let _ = give_back.send(buf);
            }
            Ok(hex::encode(hasher.finalize()))
        });
        Spool {
            to_writer: Some(to_writer),
            returned,
            spare: (0..SPOOL_BUFFERS).map(|_| vec![0u8; READ_BUFFER]).collect(),
            writer: Some(writer),
        }
    }

    pub(super) fn stopped() -> anyhow::Error {
        anyhow!(Final("the local copy of the download stopped".into()))
    }

    /// A free read buffer (waits for the writer to hand one back).
    pub(super) fn buffer(&mut self) -> Result<Vec<u8>> {
        match self.spare.pop() {
            Some(b) => Ok(b),
            None => self.returned.recv().map_err(|_| Self::stopped()),
        }
    }

    pub(super) fn give_back(&mut self, buf: Vec<u8>) {
        self.spare.push(buf);
    }

    /// Hands the first `n` bytes of `buf` to the writer.
    pub(super) fn write(&mut self, buf: Vec<u8>, n: usize) -> Result<()> {
        let tx = self.to_writer.as_ref().ok_or_else(Self::stopped)?;
        tx.send((buf, n)).map_err(|_| Self::stopped())
    }

    /// Waits for everything handed over to be written; returns the content's SHA-256.
    pub(super) fn finish(mut self) -> Result<String> {
        self.to_writer = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(Self::stopped()),
        }
    }
}
