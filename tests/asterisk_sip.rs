//! Issue 9, test 3: ordinary SIP phones on ordinary PBXs, joined by the
//! anycast network, in the anycast lab. Alice's PBX and phone A run in site
//! A, bob's PBX and phone B in site B (each site's network namespace, behind
//! its own nftables NAT; the phones on the site's LAN address). Phone A
//! (SIPp, Debian's sip-tester) calls extension 9bob on alice's PBX, which
//! runs Dial(ANYTUN/bob) through the anycast address (site A reaches proxy
//! p1, site B p2); on bob's PBX the name bob rings phone B (SIPp answering
//! and echoing RTP). Both phones first REGISTER with digest auth (PJSIP aor
//! without a static contact, auth userpass); phone A's INVITE is challenged
//! too. Bob's PBX can reach phone B only through its registered contact.
//! Phone A's tone must reach bob's PBX, and phone B's echo must come back to
//! phone A's leg.
//! Needs root, the lab's tools and the chroot (with sip-tester).

mod asterisk_lab;

use anytun::audio::read_wav;
use anytun::lab::Site;
use asterisk_lab::netlab::{wait_registered, NetLab};
use asterisk_lab::tones::{analyse, tone_and_digits};
use asterisk_lab::{serial, wait_until, Lab, Pbx, PJSIP_MODULES};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// PJSIP modules plus registrar and digest auth, and identification of a
/// phone by its From user.
fn modules() -> String {
    format!(
        "{PJSIP_MODULES} res_pjsip_registrar.so res_pjsip_authenticator_digest.so \
         res_pjsip_endpoint_identifier_user.so"
    )
}

/// Password of both phones' PJSIP auth sections (test-only).
const SECRET: &str = "s3cret-phone";

/// A phone's REGISTER (digest challenged, then answered with `-au`/`-ap`);
/// PHONE, ADDR and CPORT are replaced by its user and the address and port
/// it takes calls on.
const REG: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="register">
<send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:PHONE@[remote_ip]:[remote_port]>;tag=[call_number]
To: <sip:PHONE@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:PHONE@ADDR:CPORT>
Expires: 300
Max-Forwards: 70
Content-Length: 0

]]></send>
<recv response="401" auth="true"/>
<send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:PHONE@[remote_ip]:[remote_port]>;tag=[call_number]
To: <sip:PHONE@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:PHONE@ADDR:CPORT>
Expires: 300
[authentication]
Max-Forwards: 70
Content-Length: 0

]]></send>
<recv response="200"/>
</scenario>
"#;

/// Phone A: INVITE with PCMU (answering the digest challenge), stream a raw
/// u-law file, hang up after 6 s.
const UAC: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="phone A">
<send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: phonea <sip:phonea@[remote_ip]:[remote_port]>;tag=[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:phonea@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=phonea 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [rtpstream_audio_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
<recv response="100" optional="true"/>
<recv response="401" auth="true"/>
<send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
<send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: phonea <sip:phonea@[remote_ip]:[remote_port]>;tag=[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 2 INVITE
Contact: sip:phonea@[local_ip]:[local_port]
[authentication]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=phonea 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [rtpstream_audio_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
<recv response="100" optional="true"/>
<recv response="180" optional="true"/>
<recv response="183" optional="true"/>
<recv response="200" rtd="true"/>
<send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: phonea <sip:phonea@[remote_ip]:[remote_port]>;tag=[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 ACK
Contact: sip:phonea@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
<nop><action><exec rtp_stream="TONE,1,0"/></action></nop>
<pause milliseconds="6000"/>
<send retrans="500"><![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: phonea <sip:phonea@[remote_ip]:[remote_port]>;tag=[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 3 BYE
Contact: sip:phonea@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
<recv response="200" crlf="true"/>
</scenario>
"#;

/// One phone's PJSIP on address `addr`: an endpoint identified by its From
/// user, challenged with digest auth, and an aor with no static contact
/// (only REGISTER fills it).
fn pjsip_conf(addr: Ipv4Addr, me: u16, phone: &str) -> String {
    format!(
        "[transport-udp]\ntype=transport\nprotocol=udp\nbind={addr}:{me}\n\n\
         [{phone}]\ntype=endpoint\ncontext=phones\ndisallow=all\nallow=ulaw\naors={phone}\n\
         auth={phone}-auth\nidentify_by=username\n\
         direct_media=no\nmedia_address={addr}\nbind_rtp_to_media_address=yes\n\n\
         [{phone}-auth]\ntype=auth\nauth_type=userpass\nusername={phone}\npassword={SECRET}\n\n\
         [{phone}]\ntype=aor\nmax_contacts=1\nremove_existing=yes\n"
    )
}

/// Ports inside each site (its own namespace): the PBX's SIP, the phone's
/// SIP and RTP.
const PBX_SIP: u16 = 5060;
const PHONE_SIP: u16 = 5070;
const PHONE_RTP: u16 = 6000;

#[test]
fn sip_phone_to_sip_phone_through_two_pbxs_behind_nat_and_the_anycast_lab() {
    let _g = serial();
    let t0 = Instant::now();
    let root = &Lab::get().root;
    let net = NetLab::up("atast3");
    net.user("alice");
    net.user("bob");
    net.wait_subscribers(3);
    let (addr_a, addr_b) = (Site::A.host4(), Site::B.host4());
    let (ia, ib) = (Pbx::inner_dir("sa"), Pbx::inner_dir("sb"));
    let ext_a = format!(
        "[general]\n[from-anytun]\n[phones]\n\
         exten => 9bob,1,MixMonitor({ia}/spool/a-mix.wav,r({ia}/spool/a-from-phone.wav)t({ia}/spool/a-to-phone.wav))\n \
         same => n,Dial(ANYTUN/bob,20)\n same => n,Hangup()\n"
    );
    let ext_b = format!(
        "[general]\n[phones]\n[from-anytun]\n\
         exten => bob,1,MixMonitor({ib}/spool/b-mix.wav,r({ib}/spool/b-from-anytun.wav)t({ib}/spool/b-to-anytun.wav))\n \
         same => n,Dial(PJSIP/phoneb,20)\n same => n,Hangup()\n"
    );
    let rtp = b"[general]\nrtpstart=30000\nrtpend=30999\n".to_vec();
    let ca = net.pbx_conf(
        "alice",
        "alice",
        "codecs = ulaw\n",
        &ext_a,
        &[
            (
                "pjsip.conf",
                pjsip_conf(addr_a, PBX_SIP, "phonea").into_bytes(),
            ),
            ("rtp.conf", rtp.clone()),
        ],
    );
    let cb = net.pbx_conf(
        "bob",
        "bob",
        "codecs = ulaw\n",
        &ext_b,
        &[
            (
                "pjsip.conf",
                pjsip_conf(addr_b, PBX_SIP, "phoneb").into_bytes(),
            ),
            ("rtp.conf", rtp),
        ],
    );
    let a = Pbx::start_in(&net.site(Site::A), "sa", ca.path(), &modules());
    let b = Pbx::start_in(&net.site(Site::B), "sb", cb.path(), &modules());
    for (pbx, proxy) in [(&a, 1), (&b, 2)] {
        let st = wait_registered(pbx, 1);
        assert!(st.contains(&format!("(proxy {proxy})")), "{st}");
    }
    // The phones run in the chroot (SIPp from Debian sid), in their site.
    let tone: Vec<u8> = tone_and_digits(1000.0, 3.0, "")
        .iter()
        .map(|&s| anytun::audio::g711::ulaw_encode(s))
        .collect();
    std::fs::write(a.dir.join("spool/tone.ulaw"), tone).unwrap();
    let tone_inner = format!("{ia}/spool/tone.ulaw");
    std::fs::write(
        a.dir.join("spool/uac.xml"),
        UAC.replace("TONE", &tone_inner),
    )
    .unwrap();
    let sipp = |site: Site, args: &[String]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &net.site(site), "chroot"])
            .arg(root)
            .arg("sipp")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    let s = |x: &str| x.to_owned();
    // Each phone REGISTERs (digest auth) the address it takes calls on.
    let contact = |phone: &str, addr: Ipv4Addr| format!("{phone}/sip:{phone}@{addr}:{PHONE_SIP}");
    let register = |site: Site, pbx: &Pbx, inner: &str, phone: &str, addr: Ipv4Addr| {
        assert!(
            !pbx.rx("pjsip show contacts")
                .contains(&contact(phone, addr)),
            "{phone} has a contact before it registered"
        );
        let xml = format!("reg-{phone}.xml");
        let scen = REG
            .replace("PHONE", phone)
            .replace("ADDR", &addr.to_string())
            .replace("CPORT", &PHONE_SIP.to_string());
        std::fs::write(pbx.dir.join("spool").join(&xml), scen).unwrap();
        let out = sipp(
            site,
            &[
                format!("{addr}:{PBX_SIP}"),
                s("-sf"),
                format!("{inner}/spool/{xml}"),
                s("-i"),
                addr.to_string(),
                s("-p"),
                (PHONE_SIP + 1).to_string(),
                s("-au"),
                s(phone),
                s("-ap"),
                s(SECRET),
                s("-m"),
                s("1"),
                s("-timeout"),
                s("15s"),
            ],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{phone} REGISTER (SIPp) failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            pbx.log()
        );
        let contacts = pbx.rx("pjsip show contacts");
        println!("{phone} registered:\n{contacts}");
        assert!(
            contacts.contains(&contact(phone, addr)),
            "{phone}'s registered contact missing: {contacts}"
        );
        let aor = pbx.rx(&format!("pjsip show aor {phone}"));
        assert!(aor.contains(&contact(phone, addr)), "aor {phone}: {aor}");
    };
    register(Site::B, &b, &ib, "phoneb", addr_b);
    register(Site::A, &a, &ia, "phonea", addr_a);
    let mut phone_b_proc = sipp(
        Site::B,
        &[
            s("-sn"),
            s("uas"),
            s("-rtp_echo"),
            s("-i"),
            addr_b.to_string(),
            s("-p"),
            PHONE_SIP.to_string(),
            s("-mi"),
            addr_b.to_string(),
            s("-mp"),
            PHONE_RTP.to_string(),
            s("-m"),
            s("1"),
        ],
    )
    .spawn()
    .unwrap();
    let out = sipp(
        Site::A,
        &[
            format!("{addr_a}:{PBX_SIP}"),
            s("-sf"),
            format!("{ia}/spool/uac.xml"),
            s("-s"),
            s("9bob"),
            s("-au"),
            s("phonea"),
            s("-ap"),
            s(SECRET),
            s("-i"),
            addr_a.to_string(),
            s("-p"),
            PHONE_SIP.to_string(),
            s("-mi"),
            addr_a.to_string(),
            s("-mp"),
            PHONE_RTP.to_string(),
            s("-m"),
            s("1"),
            s("-timeout"),
            s("30s"),
        ],
    )
    .output()
    .unwrap();
    // Phone B ends after its one call; a failed call leaves it waiting.
    let mut phone_b_done = None;
    for _ in 0..100 {
        phone_b_done = phone_b_proc.try_wait().unwrap();
        if phone_b_done.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if phone_b_done.is_none() {
        let _ = phone_b_proc.kill();
        let _ = phone_b_proc.wait();
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    wait_until("the call to end", Duration::from_secs(20), || {
        a.channels() == 0 && b.channels() == 0
    });
    assert!(
        out.status.success(),
        "phone A (SIPp) failed: {stderr}\n{}",
        a.log()
    );
    // Bob's PBX reached phone B only through its registered contact (the
    // aor has no static one): phone B took the call and completed it.
    assert!(
        phone_b_done.is_some_and(|st| st.success()),
        "phone B (registered at {addr_b}:{PHONE_SIP}) did not complete the call: {phone_b_done:?}\n{}",
        b.log()
    );
    let heard = |pbx: &Pbx, f: &str| analyse(&read_wav(&pbx.spool(f)).unwrap());
    let at_b = heard(&b, "b-from-anytun.wav");
    let echoed = heard(&b, "b-to-anytun.wav");
    let back_at_a = heard(&a, "a-to-phone.wav");
    println!("bob's PBX from anytun: {at_b:?}\nphone B's echo at bob's PBX: {echoed:?}\nto phone A: {back_at_a:?}");
    for (what, an) in [
        ("phone A -> bob's PBX", &at_b),
        ("phone B's echo", &echoed),
        ("echo back to phone A", &back_at_a),
    ] {
        let hz = an
            .tone_hz
            .unwrap_or_else(|| panic!("{what}: no tone: {an:?}"));
        assert!((hz - 1000.0).abs() <= 5.0, "{what}: {hz} Hz");
        assert!(
            an.tone_seconds >= 2.5,
            "{what}: tone for {} s of 3",
            an.tone_seconds
        );
    }
    drop((a, b));
    println!("test 3 in the lab: {:.1} s", t0.elapsed().as_secs_f64());
}
