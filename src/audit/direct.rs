//! The audit log's writes through O_DIRECT, in whole blocks.
//!
//! A buffered append copies the batch into the page cache, and the `fdatasync` after it then runs
//! the file system's writeback (ext4_writepages, the block map walk, page locks) to send it to the
//! disk. A direct write hands the disk the batch itself, so the sync after it has only the device
//! flush left. On the dev VM's ext4 a durable batch took 27-43 us of CPU instead of 48 (a probe),
//! and the server 0.5 us less CPU per audited request (BENCHMARKS.md, session 26).
//!
//! Direct writes must cover whole blocks from aligned memory. The log's blocks past its end hold
//! zeros (it is preallocated), so a write is: the records already in the end's block (kept here,
//! so they are rewritten with the very bytes they have), the new records, and zeros to the next
//! block boundary. A crash during it can only leave a sector old or new, and the old records'
//! bytes are the same in both.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rustix::fs::{fcntl_getfl, fcntl_setfl, statx, AtFlags, OFlags, StatxFlags};

/// The unit of every direct write and of its memory's alignment: a page, a multiple of every
/// disk's logical block this side of 4Kn drives.
pub const BLOCK: u64 = 4096;

pub struct Direct {
    /// The bytes from the block boundary at or below the log's end up to the end, when known
    /// (after a failed batch they are read again): the end they were kept for, and the bytes.
    tail: Option<(u64, Vec<u8>)>,
    /// Backing for the aligned buffer: used from its first `BLOCK`-aligned byte.
    memory: Vec<u8>,
}

impl Direct {
    /// Switches `file` to O_DIRECT when its file system says it takes direct writes at `BLOCK`
    /// alignment (statx's DIOALIGN, Linux 6.1+). None, and the file unchanged, otherwise.
    pub fn enable(file: &File) -> Option<Direct> {
        let s = statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN).ok()?;
        let offset_align = u64::from(s.stx_dio_offset_align);
        let memory_align = u64::from(s.stx_dio_mem_align);
        let supported = StatxFlags::from_bits_retain(s.stx_mask).contains(StatxFlags::DIOALIGN)
            && offset_align != 0
            && memory_align != 0
            && BLOCK.is_multiple_of(offset_align)
            && BLOCK.is_multiple_of(memory_align);
        if !supported {
            return None;
        }
        let flags = fcntl_getfl(file).ok()?;
        fcntl_setfl(file, flags | OFlags::DIRECT).ok()?;
        Some(Direct {
            tail: None,
            memory: Vec::new(),
        })
    }

    /// Back to buffered writes (a direct write was refused after all).
    pub fn disable(file: &File) -> io::Result<()> {
        let flags = fcntl_getfl(file)?;
        fcntl_setfl(file, flags - OFlags::DIRECT)?;
        Ok(())
    }

    /// The end's block is read again before the next write: the file was found truncated under
    /// the writer, and the kept bytes would put back records that were taken out of it. (A
    /// truncation between that look and the write can still put back up to a block of them: as
    /// copies of records already copied out, never a loss.)
    pub fn forget_tail(&mut self) {
        self.tail = None;
    }

    /// Writes `data` at `end` and zeros after it up to `zero_until` (at least to the next block
    /// boundary). The blocks written must already be allocated in the file.
    pub fn write(&mut self, file: &File, end: u64, data: &[u8], zero_until: u64) -> io::Result<()> {
        let start = end - end % BLOCK;
        let mut tail = match self.tail.take() {
            Some((kept_for, tail)) if kept_for == end => tail,
            _ => self.read_tail(file, start, end)?,
        };
        let new_end = end + data.len() as u64;
        let stop = new_end.max(zero_until).div_ceil(BLOCK) * BLOCK;
        let buf = aligned(&mut self.memory, (stop - start) as usize);
        buf[..tail.len()].copy_from_slice(&tail);
        buf[tail.len()..][..data.len()].copy_from_slice(data);
        buf[tail.len() + data.len()..].fill(0);
        file.write_all_at(buf, start)?;
        let new_start = new_end - new_end % BLOCK;
        tail.clear();
        tail.extend_from_slice(&buf[(new_start - start) as usize..(new_end - start) as usize]);
        self.tail = Some((new_end, tail));
        Ok(())
    }

    /// Writes zeros over `from..to`, both block boundaries (growing the file).
    pub fn zeros(&mut self, file: &File, from: u64, to: u64) -> io::Result<()> {
        let buf = aligned(&mut self.memory, (to - from).min(1 << 20) as usize);
        buf.fill(0);
        let mut at = from;
        while at < to {
            let n = buf.len().min((to - at) as usize);
            file.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    fn read_tail(&mut self, file: &File, start: u64, end: u64) -> io::Result<Vec<u8>> {
        if end == start {
            return Ok(Vec::new());
        }
        let block = aligned(&mut self.memory, BLOCK as usize);
        // Short only at the file's end: truncated under the writer, which `AuditFile::place`
        // then finds. What is gone reads as the hole a buffered write would leave.
        let read = file.read_at(block, start)?;
        block[read..].fill(0);
        Ok(block[..(end - start) as usize].to_vec())
    }
}

/// `len` bytes of `memory` starting at a `BLOCK` boundary (grown as needed; contents unspecified).
fn aligned(memory: &mut Vec<u8>, len: usize) -> &mut [u8] {
    let slack = BLOCK as usize;
    if memory.len() < len + slack {
        *memory = vec![0u8; len + slack];
    }
    let offset = memory.as_ptr().align_offset(slack);
    &mut memory[offset..offset + len]
}
