//! The lab's names and addresses (all of them exist only inside the lab's
//! namespaces). See docs/anycast-lab.md for the picture.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Number of proxies in the lab.
pub const PROXIES: u8 = 3;
/// The anycast IPv4 address every proxy holds on `lo`.
pub const ANYCAST4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The anycast IPv6 address every proxy holds on `lo`.
pub const ANYCAST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 1);
/// The UDP port anytund serves on.
pub const PORT: u16 = 7475;
/// The proxies' AS number (private).
pub const PROXY_AS: u32 = 65100;
/// The router's AS number (private).
pub const ROUTER_AS: u32 = 65000;

/// The anycast address clients use, IPv4 or IPv6.
pub fn anycast(v6: bool) -> SocketAddr {
    let ip: IpAddr = if v6 { ANYCAST6.into() } else { ANYCAST4.into() };
    SocketAddr::new(ip, PORT)
}

/// A proxy of the lab, `p1`..`p3` (its anytund's `proxy_id` is the number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct P(pub u8);

impl P {
    /// Every proxy.
    pub fn all() -> impl Iterator<Item = P> {
        (1..=PROXIES).map(P)
    }
    /// `p1`, `p2`, ...: the short name (also the router's BGP protocol name).
    pub fn name(self) -> String {
        format!("p{}", self.0)
    }
    /// Its unicast IPv4 address (on `lo`; also its BIRD router id).
    pub fn unicast4(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, 0, self.0)
    }
    /// Its unicast IPv6 address (on `lo`).
    pub fn unicast6(self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x201, 0, 0, 0, 0, 0, u16::from(self.0))
    }
    /// Its uplink address (`up0`), IPv4.
    pub fn up4(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 10, self.0, 2)
    }
    /// The router's address on the link to this proxy, IPv4.
    pub fn rt4(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 10, self.0, 1)
    }
    /// Its uplink address, IPv6.
    pub fn up6(self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x10, u16::from(self.0), 0, 0, 0, 0, 2)
    }
    /// The router's address on the link to this proxy, IPv6.
    pub fn rt6(self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x10, u16::from(self.0), 0, 0, 0, 0, 1)
    }
}

impl std::str::FromStr for P {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n = s.strip_prefix('p').unwrap_or(s);
        match n.parse::<u8>() {
            Ok(n) if (1..=PROXIES).contains(&n) => Ok(P(n)),
            _ => Err(format!("no proxy {s:?} in the lab (p1..p{PROXIES})")),
        }
    }
}

impl std::fmt::Display for P {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// A client site behind its own NAT: `A` (nearest p1) or `B` (nearest p2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Site {
    /// Site A: nearest p1, then p3, then p2.
    A,
    /// Site B: nearest p2, then p3, then p1.
    B,
}

impl Site {
    /// Both sites.
    pub const ALL: [Site; 2] = [Site::A, Site::B];
    /// `A` or `B`.
    pub fn letter(self) -> char {
        match self {
            Site::A => 'A',
            Site::B => 'B',
        }
    }
    /// 1 or 2: the number in its addresses and kernel table (100 + n).
    pub fn n(self) -> u8 {
        match self {
            Site::A => 1,
            Site::B => 2,
        }
    }
    /// Proxies from nearest to farthest.
    pub fn preference(self) -> [P; 3] {
        match self {
            Site::A => [P(1), P(3), P(2)],
            Site::B => [P(2), P(3), P(1)],
        }
    }
    /// The router's kernel table for this site.
    pub fn table(self) -> u32 {
        100 + u32::from(self.n())
    }
    /// The NAT's outside address (what the proxies see), IPv4.
    pub fn nat4(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 20, self.n(), 2)
    }
    /// The router's address towards the NAT, IPv4.
    pub fn rt4(self) -> Ipv4Addr {
        Ipv4Addr::new(10, 20, self.n(), 1)
    }
    /// The NAT's outside address, IPv6.
    pub fn nat6(self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x20, u16::from(self.n()), 0, 0, 0, 0, 2)
    }
    /// The router's address towards the NAT, IPv6.
    pub fn rt6(self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x20, u16::from(self.n()), 0, 0, 0, 0, 1)
    }
    /// The NAT's inside address, IPv4.
    pub fn gw4(self) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, self.n(), 1)
    }
    /// The client host's address inside the site, IPv4.
    pub fn host4(self) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, self.n(), 2)
    }
    /// The NAT's inside address, IPv6.
    pub fn gw6(self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x168, u16::from(self.n()), 0, 0, 0, 0, 1)
    }
    /// The client host's address inside the site, IPv6.
    pub fn host6(self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x168, u16::from(self.n()), 0, 0, 0, 0, 2)
    }
}

impl std::str::FromStr for Site {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim_start_matches("site") {
            "A" | "a" => Ok(Site::A),
            "B" | "b" => Ok(Site::B),
            _ => Err(format!("no site {s:?} in the lab (A or B)")),
        }
    }
}

/// The namespace names of one lab, all starting with its prefix.
#[derive(Debug, Clone)]
pub struct Names {
    /// The prefix (unique per lab; the default is `atl`).
    pub prefix: String,
}

impl Names {
    /// A proxy's namespace.
    pub fn proxy(&self, p: P) -> String {
        format!("{}-{}", self.prefix, p.name())
    }
    /// The router's namespace.
    pub fn router(&self) -> String {
        format!("{}-rt", self.prefix)
    }
    /// A site's NAT namespace.
    pub fn nat(&self, s: Site) -> String {
        format!("{}-nat{}", self.prefix, s.letter())
    }
    /// A site's client namespace.
    pub fn site(&self, s: Site) -> String {
        format!("{}-site{}", self.prefix, s.letter())
    }
    /// Every namespace of the lab.
    pub fn all(&self) -> Vec<String> {
        let mut v: Vec<String> = P::all().map(|p| self.proxy(p)).collect();
        v.push(self.router());
        for s in Site::ALL {
            v.push(self.nat(s));
            v.push(self.site(s));
        }
        v
    }
}
