//! The lab's generated configs: BIRD for the router and each proxy (from
//! the documented samples in docs/bird/), and each proxy's anytund.toml.

use super::topo::{Site, ANYCAST4, ANYCAST6, P, PORT, PROXY_AS, ROUTER_AS};
use std::path::Path;

/// The documented sample the proxies' BIRD configs are made from.
pub const PROXY_SAMPLE: &str = include_str!("../../docs/bird/proxy.conf");
/// The documented sample the router's BIRD config is made from.
pub const ROUTER_SAMPLE: &str = include_str!("../../docs/bird/router.conf");

fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_owned();
    for (k, v) in vars {
        s = s.replace(&format!("@{k}@"), v);
    }
    s
}

/// Proxy `p`'s BIRD config.
pub fn proxy_bird(p: P, log: &Path) -> String {
    fill(
        PROXY_SAMPLE,
        &[
            ("ROUTER_ID", p.unicast4().to_string()),
            ("ANYCAST4", ANYCAST4.to_string()),
            ("ANYCAST6", ANYCAST6.to_string()),
            ("LOCAL4", p.up4().to_string()),
            ("LOCAL6", p.up6().to_string()),
            ("NEIGHBOR4", p.rt4().to_string()),
            ("NEIGHBOR6", p.rt6().to_string()),
            ("UPLINK", "up0".into()),
            ("LOCAL_AS", PROXY_AS.to_string()),
            ("ROUTER_AS", ROUTER_AS.to_string()),
            ("LOG", log.display().to_string()),
        ],
    )
}

/// The router's BGP protocol names for proxy `p` (IPv4, IPv6).
pub fn router_protocols(p: P) -> (String, String) {
    (p.name(), format!("{}v6", p.name()))
}

/// The router's BIRD config.
pub fn router_bird(log: &Path) -> String {
    let mut proxies = String::new();
    for p in P::all() {
        let (v4, v6) = router_protocols(p);
        proxies.push_str(&format!(
            "protocol bgp {v4} from proxy {{\n\tlocal {} as {ROUTER_AS};\n\tneighbor {} as {PROXY_AS};\n\
             \tipv4 {{ import all; export none; }};\n}}\n\n\
             protocol bgp {v6} from proxy {{\n\tlocal {} as {ROUTER_AS};\n\tneighbor {} as {PROXY_AS};\n\
             \tipv6 {{ import all; export none; }};\n}}\n\n",
            p.rt4(),
            p.up4(),
            p.rt6(),
            p.up6()
        ));
    }
    let mut pipes = String::new();
    for site in Site::ALL {
        for (fam, master, suffix) in [("4", "master4", ""), ("6", "master6", "v6")] {
            let [first, second, third] = site.preference();
            pipes.push_str(&format!(
                "# Site {l}: {first}, then {second}, then {third}.\n\
                 protocol pipe pipe{l}{fam} {{\n\ttable {master};\n\tpeer table site{l}{fam};\n\
                 \timport none;\n\texport filter {{\n\
                 \t\tif proto = \"{first}{suffix}\" then preference = 300;\n\
                 \t\telse if proto = \"{second}{suffix}\" then preference = 200;\n\
                 \t\telse preference = 110;\n\t\taccept;\n\t}};\n}}\n\n",
                l = site.letter(),
            ));
        }
    }
    fill(
        ROUTER_SAMPLE,
        &[
            ("ROUTER_ID", "10.255.0.1".into()),
            ("ROUTER_AS", ROUTER_AS.to_string()),
            ("PROXIES", proxies),
            ("PIPES", pipes),
            ("LOG", log.display().to_string()),
        ],
    )
}

/// Proxy `p`'s anytund.toml (paths relative to its own folder); `top`
/// goes among the top-level keys, `extra` is appended (a `[sync]` table,
/// when the lab runs anypsp, and any other table).
pub fn anytund_toml(p: P, store: &str, top: &str, extra: &str) -> String {
    format!(
        "# anytun lab: proxy {p}\n\
         {top}\
         proxy_id = {id}\n\
         listen = [\"0.0.0.0:{PORT}\", \"[::]:{PORT}\"]\n\
         network_key = \"network.key\"\n\
         subscribers = \"{store}\"\n\
         metrics_listen = \"127.0.0.1:9475\"\n\
         subscriber_reload_ms = 200\n\
         \n\
         [announce]\n\
         bird_config = \"bird.conf\"\n\
         bird_socket = \"bird.ctl\"\n\
         protocols = [\"anycast4\", \"anycast6\"]\n\
         {extra}",
        id = p.0
    )
}

/// Proxy `p`'s `[sync]` table: its node key, its peer-link listener on
/// its unicast address (so `partition` can cut it), and every other proxy
/// as a peer with its node public key (`node_public(q)`).
pub fn sync_toml(p: P, node_public: impl Fn(P) -> String) -> String {
    let mut s = format!(
        "\n[sync]\nnode_key = \"node.key\"\nlisten = \"{}:{SYNC_PORT}\"\npeer_detect_ms = 300\n\
         keepalive_ms = 300\nidle_timeout_ms = 1500\n",
        p.unicast4()
    );
    for q in P::all().filter(|&q| q != p) {
        s.push_str(&format!(
            "\n[[sync.peers]]\nid = {}\naddress = \"{}:{SYNC_PORT}\"\npublic_key = \"{}\"\n",
            q.0,
            q.unicast4(),
            node_public(q)
        ));
    }
    s
}

/// TCP port of the proxies' peer links.
pub const SYNC_PORT: u16 = 7476;
