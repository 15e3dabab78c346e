//! Raw system glue: socket addresses and pktinfo control messages as the
//! kernel reads and writes them, and the few syscalls not made on a batch.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;

use socket2::Socket;

use super::CMSG_CAP;

// CMSG_LEN/CMSG_SPACE below only do integer arithmetic on their argument;
// they are `unsafe` in libc merely because they mirror C macros.

/// Offset of a control message's data (`CMSG_DATA`) from its header.
// SAFETY: pure arithmetic, see above.
pub(super) const CMSG_HDR_LEN: usize = unsafe { libc::CMSG_LEN(0) } as usize;
const PKTINFO_V4_LEN: u32 = mem::size_of::<libc::in_pktinfo>() as u32;
const PKTINFO_V6_LEN: u32 = mem::size_of::<libc::in6_pktinfo>() as u32;
// SAFETY: pure arithmetic, see above.
const CMSG_SPACE_V4: usize = unsafe { libc::CMSG_SPACE(PKTINFO_V4_LEN) } as usize;
// SAFETY: pure arithmetic, see above.
const CMSG_SPACE_V6: usize = unsafe { libc::CMSG_SPACE(PKTINFO_V6_LEN) } as usize;

// A pktinfo message always fits, so `write_cmsg` never has to give up.
const _: () = assert!(CMSG_SPACE_V4 <= CMSG_CAP && CMSG_SPACE_V6 <= CMSG_CAP);
const _: () = assert!(mem::align_of::<CmsgBuf>() >= mem::align_of::<libc::cmsghdr>());

/// Storage for a socket address as the kernel reads and writes it. Big enough
/// for both families a UDP socket can report (`sockaddr_in6` is 28 bytes).
#[derive(Clone, Copy)]
#[repr(C)]
pub(super) union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl RawAddr {
    /// All bytes zero (through the larger variant), so every byte is always
    /// initialized, whichever variant is later written or read.
    pub(super) const ZERO: Self = Self {
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
pub(super) struct CmsgBuf(pub(super) [u8; CMSG_CAP]);

impl CmsgBuf {
    pub(super) const ZERO: Self = Self([0; CMSG_CAP]);
}

/// Writes `addr` into `out`, returning the length to give the kernel.
pub(super) fn encode_addr(addr: SocketAddr, out: &mut RawAddr) -> libc::socklen_t {
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
pub(super) fn parse_addr(raw: &RawAddr, len: libc::socklen_t) -> Option<SocketAddr> {
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
pub(super) fn encode_pktinfo(src: IpAddr, out: &mut CmsgBuf) -> usize {
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
pub(super) fn parse_pktinfo(buf: &[u8; CMSG_CAP], len: usize) -> Option<IpAddr> {
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
pub(super) fn sendmsg_one(
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

pub(super) fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain integers and raw pointers (null is fine
    // here), for which all-zero is a valid value.
    unsafe { mem::zeroed() }
}

/// Sets an integer socket option socket2 does not wrap.
pub(super) fn set_int_option(
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

pub(super) fn same_family(dst: SocketAddr, src_ip: Option<IpAddr>) -> bool {
    src_ip.is_none_or(|ip| ip.is_ipv4() == dst.is_ipv4())
}
