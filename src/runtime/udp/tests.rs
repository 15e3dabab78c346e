use super::sys::{
    encode_addr, encode_pktinfo, parse_addr, parse_pktinfo, CmsgBuf, RawAddr, CMSG_HDR_LEN,
};
use super::*;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr};
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

    // A batch made only of oversized datagrams returns at once with none,
    // so the caller can count them without waiting for a valid one.
    client.send_to(&[3; 3000], to).await.unwrap();
    let n = tokio::time::timeout(WAIT, server.recv_batch(&mut rb))
        .await
        .expect("recv_batch did not return for an oversized datagram")
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(rb.iter_mut().count(), 0);
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

#[test]
fn a_port_in_use_is_refused_unless_shared_on_purpose() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let _guard = rt.enter();
    // Without sharing, a second socket on the same address fails, so a
    // second daemon cannot silently take the first one's traffic.
    let first = UdpEndpoint::bind(v4(127, 0, 0, 1, 0)).unwrap();
    let addr = first.local_addr().unwrap();
    let err = UdpEndpoint::bind(addr).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    // Asking for sharing on one side only is not enough either.
    let err = UdpEndpoint::bind_with(addr, BindOptions { reuse_port: true }).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    drop(first);

    // With SO_REUSEPORT on every socket, they share the port.
    let shared = BindOptions { reuse_port: true };
    let a = UdpEndpoint::bind_with(v4(127, 0, 0, 1, 0), shared).unwrap();
    let addr = a.local_addr().unwrap();
    let b = UdpEndpoint::bind_with(addr, shared).unwrap();
    assert_eq!(b.local_addr().unwrap(), addr);
    // And an unshared socket still cannot join them.
    assert!(UdpEndpoint::bind(addr).is_err());
}
