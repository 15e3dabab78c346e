//! Batched UDP I/O for the tokio shells, with per-datagram local addresses.
//!
//! Several proxies share one anycast address, and a proxy usually binds the
//! wildcard address (`0.0.0.0` / `[::]`) so it serves every address the host
//! answers for. A reply must then leave FROM THE EXACT LOCAL ADDRESS THE CLIENT
//! SENT TO: if the kernel picked the source by routing instead, the client's
//! NAT would see a packet from an unknown peer and drop it. So every received
//! datagram reports its destination address (`IP_PKTINFO` /
//! `IPV6_RECVPKTINFO`), and every sent datagram can pin its source address
//! with a pktinfo control message.
//!
//! The data path moves whole batches per syscall (`recvmmsg` / `sendmmsg`)
//! and allocates nothing per packet: [`RecvBatch`] and [`SendBatch`] own every
//! buffer, address, iovec, header and control-message area the kernel needs,
//! allocated once when the batch is built and reused for every call.
//!
//! IPv4 and IPv6 use separate sockets (`IPV6_V6ONLY`), so an IPv4-mapped IPv6
//! address never shows up on either side.
//!
//! Linux only: `recvmmsg`/`sendmmsg` and the pktinfo semantics used here are
//! Linux's.
#![cfg(target_os = "linux")]

use std::fmt;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Size of one batch slot: the largest datagram a batch receives or sends.
///
/// anytun datagrams stay well below a 1500-byte MTU; 2048 leaves headroom and
/// anything larger arriving from the network is reported as truncated.
pub const MAX_DATAGRAM: usize = 2048;

/// Number of datagrams a batch holds when built with `Default`.
pub const DEFAULT_BATCH: usize = 32;

/// Largest batch accepted: the kernel silently caps `recvmmsg`/`sendmmsg`
/// vectors at `UIO_MAXIOV` (1024), so bigger batches would only waste memory.
pub const MAX_BATCH: usize = 1024;

/// Socket buffer size we ask for. Bursts of voice packets from many clients
/// overflow the usual 208 KiB default; the kernel caps the request at
/// `net.core.{r,w}mem_max`, which is fine (best effort).
const SOCKET_BUFFER: usize = 4 << 20;

/// Bytes of control-message space per datagram. A pktinfo message needs at
/// most `CMSG_SPACE(sizeof(in6_pktinfo))` = 40 bytes on 64-bit Linux; the
/// rest is headroom so that enabling another ancillary option later (TOS,
/// ECN, ...) cannot make the kernel drop the pktinfo message (`MSG_CTRUNC`).
const CMSG_CAP: usize = 128;

// CMSG_LEN/CMSG_SPACE below only do integer arithmetic on their argument;
// they are `unsafe` in libc merely because they mirror C macros.

/// Offset of a control message's data (`CMSG_DATA`) from its header.
// SAFETY: pure arithmetic, see above.
const CMSG_HDR_LEN: usize = unsafe { libc::CMSG_LEN(0) } as usize;
const PKTINFO_V4_LEN: u32 = mem::size_of::<libc::in_pktinfo>() as u32;
const PKTINFO_V6_LEN: u32 = mem::size_of::<libc::in6_pktinfo>() as u32;
// SAFETY: pure arithmetic, see above.
const CMSG_SPACE_V4: usize = unsafe { libc::CMSG_SPACE(PKTINFO_V4_LEN) } as usize;
// SAFETY: pure arithmetic, see above.
const CMSG_SPACE_V6: usize = unsafe { libc::CMSG_SPACE(PKTINFO_V6_LEN) } as usize;

// A pktinfo message always fits, so `write_cmsg` never has to give up.
const _: () = assert!(CMSG_SPACE_V4 <= CMSG_CAP && CMSG_SPACE_V6 <= CMSG_CAP);
const _: () = assert!(mem::align_of::<CmsgBuf>() >= mem::align_of::<libc::cmsghdr>());

/// A UDP socket of one address family, set up for batched I/O with
/// per-datagram local addresses.
///
/// Bind one endpoint per address family (e.g. `0.0.0.0:port` and
/// `[::]:port`): IPv6 endpoints are `IPV6_V6ONLY`.
#[derive(Debug)]
pub struct UdpEndpoint {
    sock: UdpSocket,
}

impl UdpEndpoint {
    /// Creates a non-blocking UDP socket bound to `addr` and registers it with
    /// the current tokio runtime.
    ///
    /// The socket has `SO_REUSEADDR` (so a restarting proxy can rebind at
    /// once), `IP_PKTINFO` or `IPV6_RECVPKTINFO` (so each received datagram
    /// reports the local address it was sent to), `IPV6_V6ONLY` for IPv6, and
    /// 4 MiB send and receive buffers if the kernel allows that much.
    ///
    /// An IPv4-mapped IPv6 address is rejected with `InvalidInput`: bind an
    /// IPv4 endpoint instead.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime (as
    /// `tokio::net::UdpSocket::from_std` does).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        if let SocketAddr::V6(a) = addr {
            if a.ip().to_ipv4_mapped().is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "IPv4-mapped IPv6 address: bind an IPv4 endpoint instead",
                ));
            }
        }
        let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            sock.set_only_v6(true)?;
            set_int_option(&sock, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        } else {
            set_int_option(&sock, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        }
        sock.set_reuse_address(true)?;
        // Best effort: a small buffer costs drops under bursts, not correctness.
        if let Err(e) = sock.set_recv_buffer_size(SOCKET_BUFFER) {
            log::debug!("SO_RCVBUF {SOCKET_BUFFER} on {addr}: {e}");
        }
        if let Err(e) = sock.set_send_buffer_size(SOCKET_BUFFER) {
            log::debug!("SO_SNDBUF {SOCKET_BUFFER} on {addr}: {e}");
        }
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        let sock = UdpSocket::from_std(sock.into())?;
        Ok(Self { sock })
    }

    /// The address the socket is bound to (with the real port if bound to
    /// port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Waits until at least one valid datagram is available, then receives up
    /// to `batch.capacity()` datagrams with one `recvmmsg` call.
    ///
    /// Returns the number of valid datagrams, always at least 1; read them
    /// with [`RecvBatch::get`] or [`RecvBatch::iter_mut`]. Datagrams larger
    /// than [`MAX_DATAGRAM`] are dropped and counted in
    /// [`RecvBatch::truncated`] instead of being returned cut short.
    ///
    /// Cancel safe: if the future is dropped, no datagram has been consumed
    /// that the batch does not hold.
    pub async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let fd = self.sock.as_raw_fd();
        loop {
            match self
                .sock
                .async_io(Interest::READABLE, || batch.recv_once(fd))
                .await
            {
                // Everything in this round was truncated: wait for more.
                Ok(0) => continue,
                Ok(n) => return Ok(n),
                Err(e) if is_transient_recv_error(&e) => {
                    log::debug!("recvmmsg: ignoring transient error: {e}");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends every datagram queued in `batch` with as few `sendmmsg` calls as
    /// the kernel allows, then clears the batch.
    ///
    /// Returns the number of datagrams the kernel accepted. A datagram the
    /// kernel refuses on its own account (unreachable host or network,
    /// firewall, a source address that is not local, wrong address family,
    /// too big, ...) is skipped and counted in [`SendBatch::send_errors`]
    /// rather than failing the datagrams behind it. Any other error is
    /// returned; the batch is cleared in that case too.
    ///
    /// Cancel safe: if the future is dropped midway (e.g. in `select!`), the
    /// batch keeps only the datagrams not yet handed to the kernel, and the
    /// next call sends just those, so nothing is sent twice.
    pub async fn send_batch(&self, batch: &mut SendBatch) -> io::Result<usize> {
        let fd = self.sock.as_raw_fd();
        let mut sent = 0;
        let result = loop {
            if batch.next >= batch.len {
                break Ok(sent);
            }
            let from = batch.next;
            match self
                .sock
                .async_io(Interest::WRITABLE, || batch.send_once(fd, from))
                .await
            {
                Ok(n) if n > 0 => {
                    batch.next += n;
                    sent += n;
                }
                // sendmmsg never reports 0 for a non-empty vector; if it
                // did, skipping one datagram guarantees progress.
                Ok(_) => {
                    batch.send_errors += 1;
                    batch.next += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // sendmmsg reports an error only for the first datagram of
                // the vector it was given: `from` is the one to blame.
                Err(e) if is_per_datagram_send_error(&e) => {
                    log::debug!("sendmmsg: dropping datagram {from} of the batch: {e}");
                    batch.send_errors += 1;
                    batch.next += 1;
                }
                Err(e) => break Err(e),
            }
        };
        batch.clear();
        result
    }

    /// Sends one datagram to `dst`, from `src_ip` if given (it must be a local
    /// address of the same family as `dst`), otherwise from the address the
    /// kernel's routing picks. For the control path; the data path should use
    /// [`send_batch`](Self::send_batch).
    pub async fn send_to(
        &self,
        data: &[u8],
        dst: SocketAddr,
        src_ip: Option<IpAddr>,
    ) -> io::Result<()> {
        if !same_family(dst, src_ip) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "source and destination address families differ",
            ));
        }
        let fd = self.sock.as_raw_fd();
        let mut addr = RawAddr::ZERO;
        let addr_len = encode_addr(dst, &mut addr);
        let mut cmsg = CmsgBuf::ZERO;
        let cmsg_len = src_ip.map_or(0, |ip| encode_pktinfo(ip, &mut cmsg));
        self.sock
            .async_io(Interest::WRITABLE, || {
                sendmsg_one(fd, data, &mut addr, addr_len, &mut cmsg, cmsg_len)
            })
            .await
    }
}

/// One received datagram, borrowed from a [`RecvBatch`].
#[derive(Debug)]
pub struct Datagram<'a> {
    /// The sender's address.
    pub src: SocketAddr,
    /// The local address the datagram was sent to, taken from the IP header
    /// via pktinfo. Reply from this address (`src_ip` of
    /// [`SendBatch::push`]). `None` only if the kernel gave no pktinfo, which
    /// endpoints built by [`UdpEndpoint::bind`] always request.
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

    /// Maximum number of datagrams one [`UdpEndpoint::recv_batch`] call
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
    fn recv_once(&mut self, fd: RawFd) -> io::Result<usize> {
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
    len: usize,
    /// First queued slot not yet handed to the kernel; survives a cancelled
    /// `send_batch` so that the next call resumes instead of resending.
    next: usize,
    send_errors: u64,
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

    /// Total number of datagrams [`UdpEndpoint::send_batch`] skipped because
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
    fn send_once(&mut self, fd: RawFd, from: usize) -> io::Result<usize> {
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

/// Storage for a socket address as the kernel reads and writes it. Big enough
/// for both families a UDP socket can report (`sockaddr_in6` is 28 bytes).
#[derive(Clone, Copy)]
#[repr(C)]
union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl RawAddr {
    /// All bytes zero (through the larger variant), so every byte is always
    /// initialized, whichever variant is later written or read.
    const ZERO: Self = Self {
        v6: libc::sockaddr_in6 {
            sin6_family: 0,
            sin6_port: 0,
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
            sin6_scope_id: 0,
        },
    };
}

/// Control-message storage, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_CAP]);

impl CmsgBuf {
    const ZERO: Self = Self([0; CMSG_CAP]);
}

/// Writes `addr` into `out`, returning the length to give the kernel.
fn encode_addr(addr: SocketAddr, out: &mut RawAddr) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            out.v4 = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            out.v6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                // Passed through unchanged, as std does.
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads a kernel-written address of length `len`; `None` for any other
/// family or a short length.
fn parse_addr(raw: &RawAddr, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    // SAFETY: both variants start with the family field at offset 0, and
    // every byte of a RawAddr is initialized (see RawAddr::ZERO), so reading
    // it through either variant is sound.
    let family = libc::c_int::from(unsafe { raw.v4.sin_family });
    match family {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: initialized bytes of a plain-integer struct, and the
            // family says the kernel wrote this variant.
            let a = unsafe { raw.v4 };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for the IPv6 variant.
            let a = unsafe { raw.v6 };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes a pktinfo control message that makes the kernel send from `src`,
/// returning the `msg_controllen` to use.
///
/// For IPv4 only `ipi_spec_dst` is set: a non-zero `ipi_ifindex` would make
/// the kernel replace the source with the interface's primary address, which
/// is exactly the wrong thing for a secondary (anycast) address.
fn encode_pktinfo(src: IpAddr, out: &mut CmsgBuf) -> usize {
    match src {
        IpAddr::V4(ip) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(ip.octets()),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            write_cmsg(out, libc::IPPROTO_IP, libc::IP_PKTINFO, info);
            CMSG_SPACE_V4
        }
        IpAddr::V6(ip) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: ip.octets(),
                },
                ipi6_ifindex: 0,
            };
            write_cmsg(out, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info);
            CMSG_SPACE_V6
        }
    }
}

/// Writes one control message (header, then `payload` at `CMSG_DATA`) at the
/// start of `out`. Only called with the two pktinfo types.
fn write_cmsg<T: Copy>(out: &mut CmsgBuf, level: libc::c_int, ty: libc::c_int, payload: T) {
    let data_end = CMSG_HDR_LEN + mem::size_of::<T>();
    // SAFETY: cmsghdr is plain integers (plus explicit padding on musl), for
    // which all-zero is a valid value.
    let mut hdr: libc::cmsghdr = unsafe { mem::zeroed() };
    hdr.cmsg_len = data_end as _;
    hdr.cmsg_level = level;
    hdr.cmsg_type = ty;
    // The slicing never fails for pktinfo (const-asserted above); it makes
    // the writes below unable to overrun whatever T is.
    if let Some(bytes) = out.0.get_mut(..mem::size_of::<libc::cmsghdr>()) {
        // SAFETY: `bytes` is exactly size_of::<cmsghdr>() bytes of `out`,
        // and an unaligned write has no alignment requirement.
        unsafe { ptr::write_unaligned(bytes.as_mut_ptr().cast::<libc::cmsghdr>(), hdr) };
    }
    if let Some(bytes) = out.0.get_mut(CMSG_HDR_LEN..data_end) {
        // SAFETY: `bytes` is exactly size_of::<T>() bytes of `out`, and an
        // unaligned write has no alignment requirement.
        unsafe { ptr::write_unaligned(bytes.as_mut_ptr().cast::<T>(), payload) };
    }
}

/// Finds the pktinfo message in the first `len` bytes of a kernel-written
/// control buffer and returns the destination address it reports.
///
/// Bounds-checks everything, so no byte pattern can make it read outside
/// `buf` or panic.
fn parse_pktinfo(buf: &[u8; CMSG_CAP], len: usize) -> Option<IpAddr> {
    let len = len.min(CMSG_CAP);
    let mut off = 0usize;
    while let Some(hdr_bytes) = buf.get(off..off + mem::size_of::<libc::cmsghdr>()) {
        if off + hdr_bytes.len() > len {
            return None;
        }
        // SAFETY: `hdr_bytes` is exactly size_of::<cmsghdr>() initialized
        // bytes, any bytes form a valid cmsghdr (plain integers), and an
        // unaligned read has no alignment requirement.
        let hdr: libc::cmsghdr =
            unsafe { ptr::read_unaligned(hdr_bytes.as_ptr().cast::<libc::cmsghdr>()) };
        let cmsg_len = hdr.cmsg_len as usize;
        if cmsg_len < CMSG_HDR_LEN || cmsg_len > len - off {
            return None;
        }
        let data = buf.get(off + CMSG_HDR_LEN..off + cmsg_len)?;
        match (hdr.cmsg_level, hdr.cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                // ipi_addr is the destination address of the IP header;
                // ipi_spec_dst is the kernel's idea of a reply source, which
                // differs for broadcasts.
                let at = mem::offset_of!(libc::in_pktinfo, ipi_addr);
                let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
                return Some(IpAddr::V4(Ipv4Addr::from(b)));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                let at = mem::offset_of!(libc::in6_pktinfo, ipi6_addr);
                let b: [u8; 16] = data.get(at..at + 16)?.try_into().ok()?;
                return Some(IpAddr::V6(Ipv6Addr::from(b)));
            }
            _ => {}
        }
        // CMSG_NXTHDR: advance by the length rounded up to size_t alignment.
        let align = mem::size_of::<usize>();
        off += (cmsg_len + align - 1) & !(align - 1);
    }
    None
}

/// One non-blocking `sendmsg` of `data` (the control path's single send).
fn sendmsg_one(
    fd: RawFd,
    data: &[u8],
    addr: &mut RawAddr,
    addr_len: libc::socklen_t,
    cmsg: &mut CmsgBuf,
    cmsg_len: usize,
) -> io::Result<()> {
    let mut iov = libc::iovec {
        // The kernel only reads through a send iovec despite the *mut type.
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain integers and pointers (plus explicit padding
    // on musl), for which all-zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = ptr::from_mut(addr).cast();
    msg.msg_namelen = addr_len;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if cmsg_len > 0 {
        msg.msg_control = ptr::from_mut(cmsg).cast();
        msg.msg_controllen = cmsg_len as _;
    }
    // SAFETY: every pointer in `msg` refers to a live local or borrowed value
    // with the stated length (cmsg_len <= CMSG_CAP), and the kernel does not
    // keep them past the call.
    let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain integers and raw pointers (null is fine
    // here), for which all-zero is a valid value.
    unsafe { mem::zeroed() }
}

/// Sets an integer socket option socket2 does not wrap.
fn set_int_option(
    sock: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the fd belongs to `sock`, alive for the call, and the option
    // value is a c_int whose address and size are passed together.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            ptr::from_ref(&value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn same_family(dst: SocketAddr, src_ip: Option<IpAddr>) -> bool {
    src_ip.is_none_or(|ip| ip.is_ipv4() == dst.is_ipv4())
}

/// Errors a receive may report that concern past traffic (a queued ICMP error
/// reported on the socket), not the socket itself.
fn is_transient_recv_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EINTR
                | libc::ECONNREFUSED
                | libc::ECONNRESET
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
        )
    )
}

/// Errors `sendmmsg` reports for one datagram (its destination, its source
/// address or its size), after which the following datagrams may well go
/// through. Anything else (bad fd, ...) concerns the socket and is returned.
fn is_per_datagram_send_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ENETDOWN
                | libc::EPERM
                | libc::EACCES
                | libc::EINVAL
                | libc::EADDRNOTAVAIL
                | libc::EAFNOSUPPORT
                | libc::EMSGSIZE
                | libc::ECONNREFUSED
                | libc::ENOBUFS
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);
    /// Documentation addresses (TEST-NET-2, RFC 3849) that no test host
    /// should have configured.
    const NOT_LOCAL_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 254));
    const NOT_LOCAL_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xdead));

    fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([a, b, c, d], port))
    }

    /// Receives exactly one valid datagram on `ep` and returns (src, dst, data).
    async fn recv_one(
        ep: &UdpEndpoint,
        batch: &mut RecvBatch,
    ) -> (SocketAddr, Option<IpAddr>, Vec<u8>) {
        let n = tokio::time::timeout(WAIT, ep.recv_batch(batch))
            .await
            .expect("timed out waiting for a datagram")
            .expect("recv_batch failed");
        assert_eq!(n, 1, "expected exactly one datagram");
        let d = batch.get(0).expect("datagram 0");
        (d.src, d.dst, d.data.to_vec())
    }

    async fn client_recv(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 4096];
        let (n, from) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
            .await
            .expect("timed out waiting for the reply")
            .expect("client recv_from failed");
        (buf[..n].to_vec(), from)
    }

    /// Like `client_recv`, but expects nothing to arrive for a while.
    async fn client_expect_nothing(sock: &UdpSocket) {
        let mut buf = [0u8; 4096];
        let r = tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await;
        assert!(r.is_err(), "unexpected datagram: {r:?}");
    }

    #[tokio::test]
    async fn v4_wildcard_reports_dst_and_replies_from_it() {
        let server = UdpEndpoint::bind(v4(0, 0, 0, 0, 0)).unwrap();
        let port = server.local_addr().unwrap().port();
        let mut rb = RecvBatch::default();
        let mut sb = SendBatch::default();

        for last in [1u8, 2, 77] {
            let target = v4(127, 0, 0, last, port);
            let target_ip = target.ip();

            // Data path: a client connected to `target` only accepts replies
            // whose source is exactly `target`.
            let client = UdpSocket::bind(v4(127, 0, 0, 1, 0)).await.unwrap();
            client.connect(target).await.unwrap();
            client.send(b"ping").await.unwrap();
            let (src, dst, data) = recv_one(&server, &mut rb).await;
            assert_eq!(src, client.local_addr().unwrap());
            assert_eq!(
                dst,
                Some(target_ip),
                "dst must be the address the client sent to"
            );
            assert_eq!(data, b"ping");

            sb.push(src, dst, b"pong").unwrap();
            assert_eq!(server.send_batch(&mut sb).await.unwrap(), 1);
            assert!(sb.is_empty(), "send_batch clears the batch");
            let (reply, from) = client_recv(&client).await;
            assert_eq!(reply, b"pong");
            assert_eq!(from, target);

            // Control path, checked through recv_from's source on an
            // unconnected client.
            let client = UdpSocket::bind(v4(127, 0, 0, 1, 0)).await.unwrap();
            client.send_to(b"hello", target).await.unwrap();
            let (src, dst, data) = recv_one(&server, &mut rb).await;
            assert_eq!(dst, Some(target_ip));
            assert_eq!(data, b"hello");
            server.send_to(b"ctl", src, dst).await.unwrap();
            let (reply, from) = client_recv(&client).await;
            assert_eq!(reply, b"ctl");
            assert_eq!(
                from, target,
                "reply must come from the address the client sent to"
            );

            if last != 1 {
                // Negative control: without src_ip the kernel picks the
                // route's source (127.0.0.1), not the address the client
                // used, so a connected client never sees the reply. This is
                // what pinning the source prevents.
                server.send_to(b"nosrc", src, None).await.unwrap();
                let (_, from) = client_recv(&client).await;
                assert_eq!(from, v4(127, 0, 0, 1, port));

                let connected = UdpSocket::bind(v4(127, 0, 0, 1, 0)).await.unwrap();
                connected.connect(target).await.unwrap();
                server
                    .send_to(b"nosrc", connected.local_addr().unwrap(), None)
                    .await
                    .unwrap();
                client_expect_nothing(&connected).await;
            }
        }
    }

    #[tokio::test]
    async fn v6_reports_dst_and_replies_from_it() {
        let server = match UdpEndpoint::bind("[::]:0".parse().unwrap()) {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
                ) =>
            {
                println!("skipping: no IPv6 on this host ({e})");
                return;
            }
            Err(e) => panic!("bind [::]:0: {e}"),
        };
        let client = match UdpSocket::bind("[::1]:0").await {
            Ok(c) => c,
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                println!("skipping: no IPv6 loopback address on this host ({e})");
                return;
            }
            Err(e) => panic!("bind [::1]:0: {e}"),
        };
        assert!(socket2::SockRef::from(&server.sock).only_v6().unwrap());
        let port = server.local_addr().unwrap().port();
        let target = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        let mut rb = RecvBatch::new(4);
        let mut sb = SendBatch::new(4);

        client.connect(target).await.unwrap();
        client.send(b"ping6").await.unwrap();
        let (src, dst, data) = recv_one(&server, &mut rb).await;
        assert_eq!(src, client.local_addr().unwrap());
        assert_eq!(dst, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(data, b"ping6");

        sb.push(src, dst, b"pong6").unwrap();
        assert_eq!(server.send_batch(&mut sb).await.unwrap(), 1);
        let (reply, from) = client_recv(&client).await;
        assert_eq!(reply, b"pong6");
        assert_eq!(from, target);

        server.send_to(b"ctl6", src, dst).await.unwrap();
        let (reply, from) = client_recv(&client).await;
        assert_eq!(reply, b"ctl6");
        assert_eq!(from, target);

        // With a single IPv6 loopback address a reply from ::1 arrives with
        // or without pktinfo, so also show that the kernel honours the IPv6
        // pktinfo message: a non-local source is refused, and only that
        // datagram is skipped.
        sb.push(src, Some(NOT_LOCAL_V6), b"bad").unwrap();
        sb.push(src, dst, b"good").unwrap();
        assert_eq!(server.send_batch(&mut sb).await.unwrap(), 1);
        assert_eq!(sb.send_errors(), 1);
        let (reply, from) = client_recv(&client).await;
        assert_eq!(reply, b"good");
        assert_eq!(from, target);

        // The v6 endpoint is v6-only, so a v4 endpoint can share its port.
        let v4 = UdpEndpoint::bind(v4(127, 0, 0, 1, port)).unwrap();
        assert_eq!(v4.local_addr().unwrap().port(), port);
    }

    /// Deterministic, index-dependent payload of varying length.
    fn payload(i: usize) -> Vec<u8> {
        let len = 1 + (i * 37) % MAX_DATAGRAM;
        (0..len).map(|j| (i * 131 + j * 7) as u8).collect()
    }

    #[tokio::test]
    async fn hundred_datagram_batch_arrives_complete_and_in_order() {
        let server = UdpEndpoint::bind(v4(127, 0, 0, 1, 0)).unwrap();
        let sender = UdpEndpoint::bind(v4(0, 0, 0, 0, 0)).unwrap();
        let to = server.local_addr().unwrap();
        let src_ip = Some(IpAddr::from([127, 0, 0, 3]));

        let mut sb = SendBatch::new(128);
        for i in 0..100 {
            // Half through the zero-copy path, half through push.
            if i % 2 == 0 {
                let p = payload(i);
                sb.push_with(to, src_ip, |buf| {
                    buf[..p.len()].copy_from_slice(&p);
                    p.len()
                })
                .unwrap();
            } else {
                sb.push(to, src_ip, &payload(i)).unwrap();
            }
        }
        assert_eq!(sb.len(), 100);
        assert_eq!(sender.send_batch(&mut sb).await.unwrap(), 100);
        assert_eq!(sb.send_errors(), 0);
        assert!(sb.is_empty());

        let expected_src = v4(127, 0, 0, 3, sender.local_addr().unwrap().port());
        let mut rb = RecvBatch::default();
        let mut got = 0;
        let mut largest = 0;
        while got < 100 {
            let n = tokio::time::timeout(WAIT, server.recv_batch(&mut rb))
                .await
                .expect("datagrams missing")
                .unwrap();
            assert!((1..=rb.capacity()).contains(&n));
            assert_eq!(n, rb.len());
            largest = largest.max(n);
            // Check both accessors agree.
            for k in 0..n {
                let d = rb.get(k).unwrap();
                assert_eq!(d.data, payload(got + k).as_slice(), "datagram {}", got + k);
            }
            assert!(rb.get(n).is_none());
            for (k, d) in rb.iter_mut().enumerate() {
                assert_eq!(d.src, expected_src);
                assert_eq!(d.dst, Some(IpAddr::from([127, 0, 0, 1])));
                assert_eq!(d.data, payload(got + k).as_slice(), "datagram {}", got + k);
            }
            assert_eq!(rb.iter_mut().count(), n);
            got += n;
        }
        assert_eq!(got, 100);
        assert!(
            largest > 1,
            "recv_batch never returned more than one datagram"
        );
        assert_eq!(rb.truncated(), 0);
    }

    #[tokio::test]
    async fn oversized_datagram_is_counted_not_returned() {
        let server = UdpEndpoint::bind(v4(127, 0, 0, 1, 0)).unwrap();
        let to = server.local_addr().unwrap();
        let client = UdpSocket::bind(v4(127, 0, 0, 1, 0)).await.unwrap();
        let exact = vec![0xAB; MAX_DATAGRAM];
        client.send_to(&[1; MAX_DATAGRAM + 1], to).await.unwrap();
        client.send_to(&[2; 9000], to).await.unwrap();
        client.send_to(&exact, to).await.unwrap();
        client.send_to(b"after", to).await.unwrap();

        let mut rb = RecvBatch::new(8);
        let mut valid = Vec::new();
        while valid.len() < 2 {
            tokio::time::timeout(WAIT, server.recv_batch(&mut rb))
                .await
                .expect("datagrams missing")
                .unwrap();
            valid.extend(rb.iter_mut().map(|d| d.data.to_vec()));
        }
        assert_eq!(valid, vec![exact, b"after".to_vec()]);
        assert_eq!(rb.truncated(), 2);

        // A batch made only of oversized datagrams is not returned at all.
        client.send_to(&[3; 3000], to).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), server.recv_batch(&mut rb)).await;
        assert!(r.is_err(), "recv_batch returned without a valid datagram");
        assert_eq!(rb.truncated(), 3);
    }

    #[tokio::test]
    async fn refused_datagram_is_skipped_and_counted() {
        let server = UdpEndpoint::bind(v4(127, 0, 0, 1, 0)).unwrap();
        let sender = UdpEndpoint::bind(v4(0, 0, 0, 0, 0)).unwrap();
        let to = server.local_addr().unwrap();
        let mut sb = SendBatch::new(8);
        sb.push(to, None, b"one").unwrap();
        // Not a local address: the kernel refuses to send from it.
        sb.push(to, Some(NOT_LOCAL_V4), b"bad source").unwrap();
        sb.push(to, None, b"two").unwrap();
        // An IPv6 destination on an IPv4 socket.
        sb.push("[::1]:9".parse().unwrap(), None, b"wrong family")
            .unwrap();
        sb.push(to, None, b"three").unwrap();
        assert_eq!(sender.send_batch(&mut sb).await.unwrap(), 3);
        assert_eq!(sb.send_errors(), 2);
        assert!(sb.is_empty());

        let mut rb = RecvBatch::default();
        let mut got = Vec::new();
        while got.len() < 3 {
            tokio::time::timeout(WAIT, server.recv_batch(&mut rb))
                .await
                .expect("datagrams missing")
                .unwrap();
            got.extend(rb.iter_mut().map(|d| d.data.to_vec()));
        }
        assert_eq!(got, [&b"one"[..], b"two", b"three"]);

        // send_to reports the error instead.
        let e = sender
            .send_to(b"x", to, Some(NOT_LOCAL_V4))
            .await
            .unwrap_err();
        assert!(is_per_datagram_send_error(&e), "{e}");
        let e = sender
            .send_to(b"x", to, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);

        // An empty batch is a no-op.
        assert_eq!(sender.send_batch(&mut sb).await.unwrap(), 0);
    }

    #[test]
    fn push_rejections() {
        let mut sb = SendBatch::new(2);
        let dst = v4(127, 0, 0, 1, 9);
        assert_eq!(
            sb.push(dst, None, &[0; MAX_DATAGRAM + 1]),
            Err(PushError::TooLarge {
                len: MAX_DATAGRAM + 1
            })
        );
        assert_eq!(
            sb.push_with(dst, None, |_| MAX_DATAGRAM + 5),
            Err(PushError::TooLarge {
                len: MAX_DATAGRAM + 5
            })
        );
        let mut called = false;
        assert_eq!(
            sb.push_with(dst, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)), |_| {
                called = true;
                0
            }),
            Err(PushError::FamilyMismatch)
        );
        assert!(!called, "fill must not run when the push is rejected");
        assert!(sb.is_empty());
        sb.push(dst, None, &[0; MAX_DATAGRAM]).unwrap();
        sb.push_with(dst, None, |buf| {
            assert_eq!(buf.len(), MAX_DATAGRAM);
            0
        })
        .unwrap();
        assert!(sb.is_full());
        assert_eq!(sb.push(dst, None, b"x"), Err(PushError::Full));
        sb.clear();
        assert!(sb.is_empty());
        assert_eq!(RecvBatch::new(0).capacity(), 1);
        assert_eq!(SendBatch::new(1 << 20).capacity(), MAX_BATCH);
    }

    #[test]
    fn bind_rejects_v4_mapped() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let e = UdpEndpoint::bind("[::ffff:127.0.0.1]:0".parse().unwrap()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn address_round_trip() {
        for a in [
            "127.0.0.2:4433",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:9",
            "[fe80::1%3]:5060",
            "[2001:db8::42]:1",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut raw = RawAddr::ZERO;
            let len = encode_addr(a, &mut raw);
            assert_eq!(parse_addr(&raw, len), Some(a));
            // A short length is refused, not misread.
            assert_eq!(parse_addr(&raw, len - 1), None);
        }
        assert_eq!(parse_addr(&RawAddr::ZERO, 28), None, "AF_UNSPEC");
    }

    #[test]
    fn pktinfo_round_trip_and_garbage() {
        for ip in [
            IpAddr::from([127, 0, 0, 2]),
            IpAddr::from([198, 51, 100, 7]),
            IpAddr::V6("2001:db8::1".parse().unwrap()),
        ] {
            let mut c = CmsgBuf::ZERO;
            let len = encode_pktinfo(ip, &mut c);
            // Sending sets ipi_spec_dst while receiving reads ipi_addr, so
            // for IPv4 put the address where the kernel reports it.
            if let IpAddr::V4(v4) = ip {
                let at = CMSG_HDR_LEN + mem::offset_of!(libc::in_pktinfo, ipi_addr);
                c.0[at..at + 4].copy_from_slice(&v4.octets());
            }
            assert_eq!(parse_pktinfo(&c.0, len), Some(ip));
            // A cut-short buffer yields nothing rather than garbage.
            assert_eq!(parse_pktinfo(&c.0, CMSG_HDR_LEN + 3), None);
        }

        // Garbage must never panic or read out of bounds.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            let mut buf = [0u8; CMSG_CAP];
            for b in buf.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            // Make plausible headers common: small lengths, real types.
            if seed % 2 == 0 {
                buf[..8].copy_from_slice(&((seed >> 8) % 64).to_ne_bytes());
            }
            let _ = parse_pktinfo(&buf, (seed >> 32) as usize % (2 * CMSG_CAP));
        }
        for clen in [0usize, 1, CMSG_HDR_LEN, CMSG_CAP, CMSG_CAP + 1, usize::MAX] {
            let mut c = CmsgBuf::ZERO;
            encode_pktinfo(IpAddr::from([10, 0, 0, 1]), &mut c);
            c.0[..mem::size_of::<usize>()].copy_from_slice(&clen.to_ne_bytes());
            let _ = parse_pktinfo(&c.0, usize::MAX);
        }
    }

    #[test]
    fn futures_and_batches_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let ep = UdpEndpoint::bind(v4(127, 0, 0, 1, 0)).unwrap();
        let mut rb = RecvBatch::default();
        let mut sb = SendBatch::default();
        assert_send(&ep.recv_batch(&mut rb));
        assert_send(&ep.send_batch(&mut sb));
        assert_send(&ep.send_to(b"", v4(127, 0, 0, 1, 9), None));
    }
}
