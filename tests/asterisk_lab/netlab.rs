//! The anycast lab (src/lab, `anytun lab`) under the Asterisk tests: the
//! PBXs run inside the lab's client sites (`ip netns exec`), each behind its
//! own nftables NAT, and reach the network through the anycast address;
//! the proxies are the lab's anytund (BIRD, BFD, anypsp). One lab per test
//! (its own namespace prefix), taken down however the test ends; a failed
//! test keeps the lab's logs.

use super::calls::{alice_extensions, bob_extensions, tone_files};
use super::{wait_until, Pbx, ANYTUND};
use anytun::lab::{preflight, topo, Lab, Site, P};
use std::path::PathBuf;
use std::time::Duration;

/// A lab that is up; down again when dropped (after the PBXs, which the
/// tests declare later and so drop first).
pub struct NetLab {
    pub lab: Lab,
}

impl NetLab {
    /// Brings up a lab with namespace prefix `prefix` (at most 8 letters
    /// or digits, unique per test), every proxy synced and each site routed
    /// to its nearest proxy.
    pub fn up(prefix: &str) -> NetLab {
        if let Err(e) = preflight() {
            panic!("the Asterisk lab tests need root and the lab's tools: {e}");
        }
        let lab = Lab::new(prefix, None, Some(ANYTUND.into())).unwrap();
        lab.down().unwrap();
        let up = lab
            .up()
            .unwrap_or_else(|e| panic!("lab {prefix} did not come up: {e}"));
        println!(
            "lab {prefix} up: both sites routed after {} ms",
            up.ready_after.as_millis()
        );
        NetLab { lab }
    }

    /// A site's namespace (where its PBX and phones run).
    pub fn site(&self, s: Site) -> String {
        self.lab.names.site(s)
    }

    /// A proxy's namespace.
    pub fn proxy(&self, p: P) -> String {
        self.lab.names.proxy(p)
    }

    /// Adds subscriber `name` (a key of its own) to every proxy's store and
    /// returns its key file; waits until every running proxy has it.
    pub fn user(&self, name: &str) -> PathBuf {
        self.lab.add_user(name).unwrap();
        self.lab.run.join("keys").join(format!("{name}.key"))
    }

    /// Adds `name` with user `key`'s key (one PBX registering several
    /// names) to every proxy's store.
    pub fn alias(&self, name: &str, key: &str) {
        let public = self.lab.user_key(key).unwrap().public();
        for db in self.lab.stores() {
            anytun::store::SubscriberStore::open(&db)
                .unwrap()
                .add(name, &public.0)
                .unwrap();
        }
    }

    /// Waits until every running proxy's snapshot holds `n` subscribers
    /// (the lab's own "lab" user counts).
    pub fn wait_subscribers(&self, n: usize) {
        self.lab
            .wait_status(
                "the subscribers in every store",
                Duration::from_secs(10),
                |s| s.subscribers >= n,
            )
            .unwrap();
    }

    /// The network's public key, as anytun.conf's network_key wants it.
    pub fn network(&self) -> String {
        self.lab.network_public().unwrap().to_string()
    }

    /// anytun.conf for a PBX in a site: the anycast address, `names`
    /// registered, incoming calls into [from-anytun].
    pub fn anytun_conf(&self, names: &str, extra: &str) -> String {
        format!(
            "[general]\nkey_file = anytun.key\nnetwork_key = {}\nproxy = {}\n\
             register = {names}\ncontext = from-anytun\nmax_calls = 64\n{extra}",
            self.network(),
            topo::anycast(false)
        )
    }

    /// A PBX's config directory: anytun.conf (registering `names` with
    /// user `key`'s key), extensions.conf and extra files.
    pub fn pbx_conf(
        &self,
        key: &str,
        names: &str,
        extra_conf: &str,
        extensions: &str,
        files: &[(&str, Vec<u8>)],
    ) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("anytun.conf"),
            self.anytun_conf(names, extra_conf),
        )
        .unwrap();
        std::fs::copy(
            self.lab.run.join("keys").join(format!("{key}.key")),
            d.path().join("anytun.key"),
        )
        .unwrap();
        std::fs::write(d.path().join("extensions.conf"), extensions).unwrap();
        for (f, data) in files {
            std::fs::write(d.path().join(f), data).unwrap();
        }
        d
    }
}

impl NetLab {
    /// Test 1's PBXs (tests/asterisk_lab/calls.rs), ulaw and alaw: alice's
    /// in site A (`{tag}a`), bob's in site B (`{tag}b`), each registered
    /// at its site's nearest proxy, p1 and p2 (asserted).
    pub fn call_pbxs(&self, tag: &str) -> (Pbx, Pbx) {
        let (sa, sb) = (format!("{tag}a"), format!("{tag}b"));
        let (ia, ib) = (Pbx::inner_dir(&sa), Pbx::inner_dir(&sb));
        let (tone_a, tone_b) = tone_files();
        // Copied into the instances when they start.
        let ca = self.pbx_conf(
            "alice",
            "alice",
            "codecs = ulaw,alaw\n",
            &alice_extensions(&ia),
            &[("tone-a.wav", tone_a)],
        );
        let cb = self.pbx_conf(
            "bob",
            "bob",
            "codecs = ulaw,alaw\n",
            &bob_extensions(&ib),
            &[("tone-b.wav", tone_b)],
        );
        let a = Pbx::start_in(&self.site(Site::A), &sa, ca.path(), "");
        let b = Pbx::start_in(&self.site(Site::B), &sb, cb.path(), "");
        let st_a = wait_registered(&a, 1);
        let st_b = wait_registered(&b, 1);
        assert!(st_a.contains("(proxy 1)"), "alice's PBX:\n{st_a}");
        assert!(st_b.contains("(proxy 2)"), "bob's PBX:\n{st_b}");
        (a, b)
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("lab-failed-{}", self.lab.names.prefix));
            let _ = std::fs::remove_dir_all(&keep);
            let copied = std::process::Command::new("cp")
                .arg("-a")
                .arg(&self.lab.run)
                .arg(&keep)
                .status();
            eprintln!("lab logs kept in {} ({copied:?})", keep.display());
        }
        if let Err(e) = self.lab.down() {
            eprintln!("lab down failed: {e}");
        }
    }
}

/// Waits until `pbx` has its session up (at the anycast address) and
/// `names` names registered; returns `anytun show status`, which names the
/// proxy serving it ("(proxy N)").
pub fn wait_registered(pbx: &Pbx, names: usize) -> String {
    wait_until(
        &format!("{}: connected and {names} names registered", pbx.name),
        Duration::from_secs(20),
        || {
            let st = pbx.rx("anytun show status");
            st.contains("Session:          connected")
                && st.contains(&format!("Names registered: {names} of"))
        },
    );
    pbx.rx("anytun show status")
}
