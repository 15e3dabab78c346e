//! The reusable batches: every buffer, address, iovec, header and
//! control-message area one `recvmmsg` / `sendmmsg` call needs.

use std::fmt;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::RawFd;
use std::ptr;

use super::sys::{
    encode_addr, encode_pktinfo, parse_addr, parse_pktinfo, same_family, zeroed_mmsghdr, CmsgBuf,
    RawAddr,
};
use super::{CMSG_CAP, DEFAULT_BATCH, MAX_BATCH, MAX_DATAGRAM};

/// One received datagram, borrowed from a [`RecvBatch`].
#[derive(Debug)]
pub struct Datagram<'a> {
    /// The sender's address.
    pub src: SocketAddr,
    /// The local address the datagram was sent to, taken from the IP header
    /// via pktinfo. Reply from this address (`src_ip` of
    /// [`SendBatch::push`]). `None` only if the kernel gave no pktinfo, which
    /// endpoints built by [`UdpEndpoint::bind`](super::UdpEndpoint::bind) always request.
    pub dst: Option<IpAddr>,
    /// The payload, mutable so that it can be decrypted in place.
    pub data: &'a mut [u8],
}

/// Reusable storage for receiving up to `capacity` datagrams per syscall.
///
/// All memory is allocated by [`RecvBatch::new`]; receiving allocates nothing.
pub struct RecvBatch {
    slots: Box<[RecvSlot]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Each valid datagram of the last call, in arrival order.
    valid: Box<[RecvMeta]>,
    /// Number of entries of `valid` in use.
    len: usize,
    truncated: u64,
}

// SAFETY: the only non-Send fields are the raw pointers inside `hdrs` and the
// slots' iovecs. They point solely into this batch's own heap storage, are
// rewritten right before every syscall and are never dereferenced by Rust
// code, so moving the batch to another thread is as safe as moving its boxes.
unsafe impl Send for RecvBatch {}

#[derive(Clone, Copy)]
struct RecvSlot {
    buf: [u8; MAX_DATAGRAM],
    addr: RawAddr,
    cmsg: CmsgBuf,
    iov: libc::iovec,
}

/// What the kernel reported for the datagram in slot `slot`.
#[derive(Clone, Copy)]
struct RecvMeta {
    slot: usize,
    src: SocketAddr,
    dst: Option<IpAddr>,
    len: usize,
}

impl RecvBatch {
    /// Allocates storage for `capacity` datagrams of [`MAX_DATAGRAM`] bytes.
    /// `capacity` is clamped to `1..=MAX_BATCH`.
    pub fn new(capacity: usize) -> Self {
        let n = capacity.clamp(1, MAX_BATCH);
        let slot = RecvSlot {
            buf: [0; MAX_DATAGRAM],
            addr: RawAddr::ZERO,
            cmsg: CmsgBuf::ZERO,
            iov: libc::iovec {
                iov_base: ptr::null_mut(),
                iov_len: 0,
            },
        };
        Self {
            slots: vec![slot; n].into_boxed_slice(),
            hdrs: vec![zeroed_mmsghdr(); n].into_boxed_slice(),
            valid: vec![RecvMeta::EMPTY; n].into_boxed_slice(),
            len: 0,
            truncated: 0,
        }
    }

    /// Maximum number of datagrams one
    /// [`UdpEndpoint::recv_batch`](super::UdpEndpoint::recv_batch) call
    /// returns.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Number of valid datagrams from the last receive.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last receive returned nothing (or none has happened yet).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th valid datagram of the last receive, in arrival order.
    pub fn get(&mut self, i: usize) -> Option<Datagram<'_>> {
        if i >= self.len {
            return None;
        }
        let meta = *self.valid.get(i)?;
        let data = self.slots.get_mut(meta.slot)?.buf.get_mut(..meta.len)?;
        Some(Datagram {
            src: meta.src,
            dst: meta.dst,
            data,
        })
    }

    /// All valid datagrams of the last receive, in arrival order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = Datagram<'_>> + '_ {
        // Valid slots ascend, so one pass over the slots pairs each with its
        // metadata and hands out disjoint buffers without unsafe code.
        let mut valid = self.valid.get(..self.len).unwrap_or(&[]).iter().peekable();
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(move |(i, slot)| {
                let meta = valid.next_if(|m| m.slot == i)?;
                Some(Datagram {
                    src: meta.src,
                    dst: meta.dst,
                    data: slot.buf.get_mut(..meta.len)?,
                })
            })
    }

    /// Total number of datagrams dropped because they were larger than
    /// [`MAX_DATAGRAM`], since this batch was created.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// One non-blocking `recvmmsg`. Returns the number of valid datagrams
    /// (possibly 0 if all were truncated) or `WouldBlock`.
    pub(super) fn recv_once(&mut self, fd: RawFd) -> io::Result<usize> {
        self.len = 0;
        // The kernel overwrites lengths and flags, so every field is reset.
        for (slot, hdr) in self.slots.iter_mut().zip(self.hdrs.iter_mut()) {
            slot.iov = libc::iovec {
                iov_base: slot.buf.as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            };
            let m = &mut hdr.msg_hdr;
            m.msg_name = ptr::addr_of_mut!(slot.addr).cast();
            m.msg_namelen = mem::size_of::<RawAddr>() as libc::socklen_t;
            m.msg_iov = ptr::addr_of_mut!(slot.iov);
            m.msg_iovlen = 1;
            m.msg_control = ptr::addr_of_mut!(slot.cmsg).cast();
            m.msg_controllen = CMSG_CAP as _;
            m.msg_flags = 0;
            hdr.msg_len = 0;
        }
        // SAFETY: each header points at its own slot's address, iovec and
        // control storage with the lengths of that storage, and each iovec at
        // its slot's MAX_DATAGRAM-byte buffer. All of it lives in boxes owned
        // by `self`, untouched until the call returns; vlen is the header
        // count. The kernel writes only within those bounds.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                libc::MSG_DONTWAIT as _,
                ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let received = (r as usize).min(self.hdrs.len());
        for (i, hdr) in self.hdrs.iter().take(received).enumerate() {
            if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.truncated += 1;
                continue;
            }
            // Cannot fail for a datagram of a UDP socket; if it ever does
            // the datagram is unusable (no one to reply to), so drop it.
            let Some(meta) = self.slots.get(i).and_then(|s| parse_slot(i, hdr, s)) else {
                log::debug!("recvmmsg: dropping datagram with unparseable source address");
                continue;
            };
            if let Some(v) = self.valid.get_mut(self.len) {
                *v = meta;
                self.len += 1;
            }
        }
        Ok(self.len)
    }
}

impl RecvMeta {
    const EMPTY: Self = Self {
        slot: 0,
        src: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
        dst: None,
        len: 0,
    };
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new(DEFAULT_BATCH)
    }
}

impl fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.capacity())
            .field("len", &self.len)
            .field("truncated", &self.truncated)
            .finish()
    }
}

/// Reads what the kernel reported for the datagram in slot `i`.
fn parse_slot(i: usize, hdr: &libc::mmsghdr, slot: &RecvSlot) -> Option<RecvMeta> {
    let src = parse_addr(&slot.addr, hdr.msg_hdr.msg_namelen)?;
    // msg_controllen is size_t on glibc but socklen_t on musl.
    #[allow(clippy::unnecessary_cast)]
    let dst = parse_pktinfo(&slot.cmsg.0, hdr.msg_hdr.msg_controllen as usize);
    Some(RecvMeta {
        slot: i,
        src,
        dst,
        len: (hdr.msg_len as usize).min(MAX_DATAGRAM),
    })
}

/// Why a datagram was not queued in a [`SendBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The batch holds `capacity()` datagrams already: send it first.
    #[error("send batch is full")]
    Full,
    /// The datagram is longer than [`MAX_DATAGRAM`].
    #[error("datagram of {len} bytes exceeds the {MAX_DATAGRAM}-byte slot")]
    TooLarge {
        /// Length that was asked for.
        len: usize,
    },
    /// `src_ip` is IPv4 and `dst` IPv6, or the other way round.
    #[error("source and destination address families differ")]
    FamilyMismatch,
}

/// Reusable storage for sending up to `capacity` datagrams per syscall.
///
/// All memory is allocated by [`SendBatch::new`]; queueing and sending
/// allocate nothing.
pub struct SendBatch {
    slots: Box<[SendSlot]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Number of slots queued.
    pub(super) len: usize,
    /// First queued slot not yet handed to the kernel; survives a cancelled
    /// `send_batch` so that the next call resumes instead of resending.
    pub(super) next: usize,
    pub(super) send_errors: u64,
}

// SAFETY: as for RecvBatch: the raw pointers in `hdrs` and the slots' iovecs
// point only into this batch's own heap storage, are rewritten right before
// every syscall and are never dereferenced by Rust code.
unsafe impl Send for SendBatch {}

#[derive(Clone, Copy)]
struct SendSlot {
    buf: [u8; MAX_DATAGRAM],
    len: usize,
    addr: RawAddr,
    addr_len: libc::socklen_t,
    cmsg: CmsgBuf,
    cmsg_len: usize,
    iov: libc::iovec,
}

impl SendBatch {
    /// Allocates storage for `capacity` datagrams of up to [`MAX_DATAGRAM`]
    /// bytes. `capacity` is clamped to `1..=MAX_BATCH`.
    pub fn new(capacity: usize) -> Self {
        let n = capacity.clamp(1, MAX_BATCH);
        let slot = SendSlot {
            buf: [0; MAX_DATAGRAM],
            len: 0,
            addr: RawAddr::ZERO,
            addr_len: 0,
            cmsg: CmsgBuf::ZERO,
            cmsg_len: 0,
            iov: libc::iovec {
                iov_base: ptr::null_mut(),
                iov_len: 0,
            },
        };
        Self {
            slots: vec![slot; n].into_boxed_slice(),
            hdrs: vec![zeroed_mmsghdr(); n].into_boxed_slice(),
            len: 0,
            next: 0,
            send_errors: 0,
        }
    }

    /// Maximum number of datagrams the batch queues.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Number of datagrams queued and not yet sent.
    pub fn len(&self) -> usize {
        self.len.saturating_sub(self.next)
    }

    /// Whether nothing is waiting to be sent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the next push would fail with [`PushError::Full`].
    pub fn is_full(&self) -> bool {
        self.len >= self.slots.len()
    }

    /// Drops every queued datagram.
    pub fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
    }

    /// Total number of datagrams
    /// [`UdpEndpoint::send_batch`](super::UdpEndpoint::send_batch) skipped because
    /// the kernel refused them, since this batch was created.
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }

    /// Queues a copy of `data` for `dst`, sent from `src_ip` if given (use the
    /// [`Datagram::dst`] the peer sent to), else from the address the kernel's
    /// routing picks.
    pub fn push(
        &mut self,
        dst: SocketAddr,
        src_ip: Option<IpAddr>,
        data: &[u8],
    ) -> Result<(), PushError> {
        if data.len() > MAX_DATAGRAM {
            return Err(PushError::TooLarge { len: data.len() });
        }
        self.push_with(dst, src_ip, |buf| match buf.get_mut(..data.len()) {
            Some(b) => {
                b.copy_from_slice(data);
                data.len()
            }
            None => usize::MAX, // unreachable: checked above; rejected as TooLarge
        })
    }

    /// Queues a datagram that `fill` writes straight into the batch's slot
    /// (no copy): `fill` gets a [`MAX_DATAGRAM`]-byte buffer (holding stale
    /// bytes) and returns how many bytes of it form the datagram. Addressing
    /// is as for [`push`](Self::push).
    ///
    /// `fill` is not called if the batch is full or the families differ. If
    /// it returns more than [`MAX_DATAGRAM`], nothing is queued.
    pub fn push_with<F>(
        &mut self,
        dst: SocketAddr,
        src_ip: Option<IpAddr>,
        fill: F,
    ) -> Result<(), PushError>
    where
        F: FnOnce(&mut [u8]) -> usize,
    {
        if !same_family(dst, src_ip) {
            return Err(PushError::FamilyMismatch);
        }
        let slot = self.slots.get_mut(self.len).ok_or(PushError::Full)?;
        let len = fill(&mut slot.buf);
        if len > MAX_DATAGRAM {
            return Err(PushError::TooLarge { len });
        }
        slot.len = len;
        slot.addr_len = encode_addr(dst, &mut slot.addr);
        slot.cmsg_len = src_ip.map_or(0, |ip| encode_pktinfo(ip, &mut slot.cmsg));
        self.len += 1;
        Ok(())
    }

    /// One non-blocking `sendmmsg` of the queued datagrams from index `from`
    /// on. Returns how many the kernel took, or the error of datagram `from`.
    pub(super) fn send_once(&mut self, fd: RawFd, from: usize) -> io::Result<usize> {
        let Some(slots) = self.slots.get_mut(from..self.len) else {
            return Ok(0);
        };
        let count = slots.len();
        if count == 0 {
            return Ok(0);
        }
        for (slot, hdr) in slots.iter_mut().zip(self.hdrs.iter_mut()) {
            slot.iov = libc::iovec {
                iov_base: slot.buf.as_mut_ptr().cast(),
                iov_len: slot.len,
            };
            let m = &mut hdr.msg_hdr;
            m.msg_name = ptr::addr_of_mut!(slot.addr).cast();
            m.msg_namelen = slot.addr_len;
            m.msg_iov = ptr::addr_of_mut!(slot.iov);
            m.msg_iovlen = 1;
            m.msg_control = if slot.cmsg_len == 0 {
                ptr::null_mut()
            } else {
                ptr::addr_of_mut!(slot.cmsg).cast()
            };
            m.msg_controllen = slot.cmsg_len as _;
            m.msg_flags = 0;
            hdr.msg_len = 0;
        }
        // SAFETY: the first `count` headers (count <= hdrs.len() since both
        // boxes have the batch's capacity) point at their slots' address,
        // iovec and control storage with lengths within that storage, and each
        // iovec at `len <= MAX_DATAGRAM` bytes of its slot's buffer. All of it
        // is owned by `self` and untouched until the call returns.
        let r = unsafe {
            libc::sendmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT as _,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok((r as usize).min(count))
        }
    }
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new(DEFAULT_BATCH)
    }
}

impl fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendBatch")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("send_errors", &self.send_errors)
            .finish()
    }
}
