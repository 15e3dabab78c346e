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

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

mod batch;
mod sys;
#[cfg(test)]
mod tests;

pub use batch::{Datagram, PushError, RecvBatch, SendBatch};

use sys::{
    encode_addr, encode_pktinfo, same_family, sendmsg_one, set_int_option, CmsgBuf, RawAddr,
};

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

/// How a socket shares its address and port with other sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindOptions {
    /// Set `SO_REUSEPORT`, so that several sockets (several daemons) that
    /// all set it bind one address and port on purpose; the kernel spreads
    /// incoming flows among them. Off by default: a port in use is an error.
    pub reuse_port: bool,
}

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
    /// Creates a non-blocking UDP socket bound to `addr` that shares its
    /// port with nobody, and registers it with the current tokio runtime.
    /// See [`bind_with`](Self::bind_with).
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime (as
    /// `tokio::net::UdpSocket::from_std` does).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        Self::bind_with(addr, BindOptions::default())
    }

    /// Creates a non-blocking UDP socket bound to `addr` and registers it with
    /// the current tokio runtime.
    ///
    /// The socket has `IP_PKTINFO` or `IPV6_RECVPKTINFO` (so each received
    /// datagram reports the local address it was sent to), `IPV6_V6ONLY` for
    /// IPv6, 4 MiB send and receive buffers if the kernel allows that much,
    /// and `SO_REUSEPORT` only if `opts` asks for it. There is no
    /// `SO_REUSEADDR`: UDP has no TIME_WAIT, so a restart rebinds without it,
    /// and with it a second process would silently share the port. A port in
    /// use is therefore an error of kind `AddrInUse`.
    ///
    /// An IPv4-mapped IPv6 address is rejected with `InvalidInput`: bind an
    /// IPv4 endpoint instead.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime (as
    /// `tokio::net::UdpSocket::from_std` does).
    pub fn bind_with(addr: SocketAddr, opts: BindOptions) -> io::Result<Self> {
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
        if opts.reuse_port {
            set_int_option(&sock, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        }
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
    /// Returns the number of valid datagrams; read them with
    /// [`RecvBatch::get`] or [`RecvBatch::iter_mut`]. Datagrams larger than
    /// [`MAX_DATAGRAM`] are dropped and counted in [`RecvBatch::truncated`]
    /// instead of being returned cut short; the result is 0 only when a
    /// receive got nothing else, so that the caller learns of them at once
    /// (and can count them) rather than at the next valid datagram.
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
                // Possibly 0: everything in this round was truncated.
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
