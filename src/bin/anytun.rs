//! `anytun`: the command-line tool. Keys, subscribers, and a client that can
//! register, call and answer with real audio files; plus the built-in demo.

use anytun::audio::{read_wav, write_wav, Codec};
use anytun::call::{Cause, Name};
use anytun::client::{ClientConfig, ClientError, Event};
use anytun::config;
use anytun::crypto::{KeyError, PublicKey, SecretKey};
use anytun::demo::{self, DemoOptions};
use anytun::media::{self, CallRecorder};
use anytun::runtime::client::{ClientRuntime, VoiceSink};
use anytun::session::CallId;
use anytun::store::SubscriberStore;
use clap::{Args, Parser, Subcommand};
use std::cell::Cell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

#[derive(Parser)]
#[command(
    name = "anytun",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ANYTUN_COMMIT"), ")"),
    about = "anytun: anycast VoIP over NAT — keys, subscribers, calls, demo"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make a new private key; print its public key.
    Keygen {
        /// Write the private key to this file (mode 0600; never overwritten).
        /// Without it, the private key is printed.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the public key of a private key file.
    Pubkey {
        /// The private key file.
        #[arg(long = "key", value_name = "FILE", conflicts_with = "file")]
        key: Option<PathBuf>,
        /// The private key file (the same as --key).
        #[arg(value_name = "FILE", required_unless_present = "key")]
        file: Option<PathBuf>,
    },
    /// Manage the subscriber store (names and authorised client keys) that
    /// anytund reads: found through the same config file as the daemon's.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        /// The daemon's config file, which names the store. Without it,
        /// /etc/anytun/anytund.toml if it exists, else the built-in default
        /// store (see README).
        #[arg(long, short, global = true, env = config::CONFIG_ENV)]
        config: Option<PathBuf>,
        /// The SQLite subscriber store, overriding the config's.
        #[arg(long, global = true, env = "ANYTUN_DB")]
        db: Option<PathBuf>,
    },
    /// Show a running anytund's sync peers (state, queue, lag, last heard)
    /// and its sync state, read from its metrics listener (`/status`).
    Peers {
        #[command(flatten)]
        target: StatusArgs,
    },
    /// Show a running anytund's state: ready, sessions, calls, sync, peers.
    Status {
        #[command(flatten)]
        target: StatusArgs,
    },
    /// Register NAME and stay reachable (Ctrl-C to stop). Incoming calls are
    /// refused as busy: use `anytun answer` to take them.
    Register {
        /// The name.
        name: Name,
        /// Registration lifetime in seconds (refreshed automatically).
        #[arg(long, default_value_t = 300)]
        expires: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Call NAME, play a WAV file into the call, record what comes back.
    Call {
        /// Who to call.
        name: Name,
        /// 8 kHz mono 16-bit WAV to send.
        #[arg(long)]
        play: PathBuf,
        /// Where to write what the other side sends.
        #[arg(long)]
        record: Option<PathBuf>,
        /// Call as this name (default: the first name of this key).
        #[arg(long = "as")]
        as_name: Option<Name>,
        /// Codecs to offer, in order of preference.
        #[arg(long, value_delimiter = ',', default_value = "ulaw,alaw,slin")]
        codecs: Vec<String>,
        /// DTMF digits to send once the call is answered.
        #[arg(long)]
        dtmf: Option<String>,
        #[command(flatten)]
        media: MediaArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Register NAME, answer incoming calls, play and record.
    Answer {
        /// The name to be reachable under.
        name: Name,
        /// 8 kHz mono 16-bit WAV to send (silence if not given).
        #[arg(long)]
        play: Option<PathBuf>,
        /// Where to write what the caller sends.
        #[arg(long)]
        record: Option<PathBuf>,
        /// Codecs this side accepts, in order of preference.
        #[arg(long, value_delimiter = ',', default_value = "ulaw,alaw,slin")]
        codecs: Vec<String>,
        /// How many calls to take before exiting (at least 1). With more
        /// than one, --record F writes each call to its own file: F-1.wav,
        /// F-2.wav, ... (the number before the extension).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        calls: u32,
        #[command(flatten)]
        media: MediaArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a proxy and two clients on loopback, call, send audio both ways,
    /// check it arrived intact, and report.
    Demo {
        /// Print one JSON object instead of the human report.
        #[arg(long)]
        json: bool,
        /// Seconds of audio each way.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Codec of the call (ulaw, alaw or slin).
        #[arg(long, default_value = "ulaw")]
        codec: String,
        /// Run on loopback even as root (root runs the anycast lab:
        /// three proxies, two NATed sites, the serving proxy killed mid-call).
        #[arg(long)]
        loopback: bool,
        /// Proxies in one anypsp network on loopback (2..=8: the failover
        /// demo, where the proxy serving one side of the call is stopped
        /// mid-call).
        #[arg(long, default_value_t = 1)]
        proxies: usize,
    },
    /// The anycast lab: proxies, a router and NATed sites in network
    /// namespaces, with knobs that break the proxies (root only).
    Lab {
        #[command(subcommand)]
        cmd: anytun::lab::cli::LabCmd,
        #[command(flatten)]
        opts: anytun::lab::cli::LabOpts,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Authorise a client key for a name.
    Add {
        /// The name.
        name: Name,
        /// The client's public key (base64, from `anytun keygen`).
        // A String, parsed by us: clap would echo a refused value, which
        // may be a private key pasted by mistake.
        key: String,
    },
    /// List names and keys.
    List {
        /// List removed (revoked) keys instead, kept as tombstones so that
        /// peers cannot bring them back, with when they were removed.
        #[arg(long)]
        removed: bool,
    },
    /// Remove a name's key (or all its keys).
    Remove {
        /// The name.
        name: Name,
        /// Only this key.
        key: Option<String>,
    },
}

/// Which daemon `peers` and `status` ask.
#[derive(Args, Clone)]
struct StatusArgs {
    /// The daemon's metrics address (HOST:PORT). Without it, the
    /// `metrics_listen` of the config file (see `user --config`).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// The daemon's config file, to find its metrics address.
    #[arg(long, short, env = config::CONFIG_ENV)]
    config: Option<PathBuf>,
    /// Print the status document (JSON) as the daemon sent it.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct ClientArgs {
    /// This client's private key file.
    #[arg(long, env = "ANYTUN_KEY")]
    key: PathBuf,
    /// The network's public key (base64), or a file holding it.
    #[arg(long, env = "ANYTUN_NETWORK_KEY")]
    network_key: String,
    /// The proxy (anycast) address: IP:PORT or HOST:PORT. A host name is
    /// resolved once, at start; the first address the system returns is
    /// used (the "connected" line says which).
    #[arg(long, env = "ANYTUN_PROXY", default_value = "127.0.0.1:7475", value_parser = proxy_arg)]
    proxy: ProxyAddr,
    /// Keepalive interval in seconds (default: what the proxy says).
    #[arg(long)]
    keepalive: Option<u64>,
}

/// Options of the commands that carry calls (`call`, `answer`); `register`
/// refuses every call, so it has none.
#[derive(Args, Clone)]
struct MediaArgs {
    /// End a call when nothing (voice or keepalive) has come from the other
    /// side for this many seconds.
    #[arg(long, default_value_t = 10.0, value_parser = media_timeout_arg)]
    media_timeout: f64,
}

/// `--proxy` as given and the address it stands for.
#[derive(Clone, Debug)]
struct ProxyAddr {
    /// What the user wrote.
    given: String,
    /// The address used: the given one, or the first the system's resolver
    /// returned for a host name.
    addr: SocketAddr,
}

/// Parses `--proxy`: a socket address, or a host name and port resolved
/// with the system's resolver (std's `ToSocketAddrs`), keeping its first
/// answer.
fn proxy_arg(s: &str) -> Result<ProxyAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(ProxyAddr {
            given: s.to_owned(),
            addr,
        });
    }
    let all: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s} (give HOST:PORT or IP:PORT): {e}"))?
        .collect();
    let addr = *all
        .first()
        .ok_or_else(|| format!("{s} resolves to no address"))?;
    log::info!("--proxy {s} resolves to {all:?}; using {addr}");
    Ok(ProxyAddr {
        given: s.to_owned(),
        addr,
    })
}

impl std::fmt::Display for ProxyAddr {
    /// The address, preceded by the host name it came from, if any.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.given.parse::<SocketAddr>().is_ok() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{} = {}", self.given, self.addr)
        }
    }
}

fn media_timeout_arg(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (2.0..=3600.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 2 and 3600 seconds".into())
    }
}

type CliResult = Result<(), String>;

/// The refusal of a private key given where a public key belongs; `what`
/// names the file or option, never the key.
fn private_key_given(what: &str) -> String {
    format!(
        "{what} is a private key; give the network's PUBLIC key: \
         `anytun pubkey --key FILE` prints it"
    )
}

/// Reads `--network-key` (or `ANYTUN_NETWORK_KEY`): a base64 public key or
/// a file holding one. A private key, in a file or as text, is refused at
/// once, and no error quotes what was given.
fn network_key(text: &str) -> Result<PublicKey, String> {
    let path = Path::new(text);
    if path.is_file() {
        return PublicKey::read_file(path).map_err(|e| {
            if e.is_private_key() {
                private_key_given(&path.display().to_string())
            } else {
                format!("--network-key: {e}")
            }
        });
    }
    PublicKey::from_base64(text).map_err(|e| match e {
        KeyError::PrivateKey => private_key_given("--network-key"),
        e => format!("--network-key: neither a readable file nor a public key: {e}"),
    })
}

/// Parses a subscriber's public key argument; refuses a private key without
/// quoting it.
fn subscriber_key(text: &str) -> Result<PublicKey, String> {
    PublicKey::from_base64(text).map_err(|e| match e {
        KeyError::PrivateKey => "KEY is a private key; give the client's PUBLIC key: \
                                 `anytun pubkey --key FILE` prints it"
            .to_owned(),
        e => format!("KEY: {e}"),
    })
}

impl ClientArgs {
    fn config(&self) -> Result<ClientConfig, String> {
        let secret = SecretKey::read_file(&self.key).map_err(|e| e.to_string())?;
        let network = network_key(&self.network_key)?;
        // An untagged (older) private key file cannot be told from a public
        // key, except this one: the client's own key given twice.
        if &network.0 == secret.as_bytes() {
            return Err(private_key_given("--network-key (this client's own --key)"));
        }
        let mut cfg = ClientConfig::new(secret, network);
        cfg.keepalive = self.keepalive.map(Duration::from_secs);
        Ok(cfg)
    }
}

/// How long a stopping client waits for the proxy to acknowledge its
/// Hangups and unregistrations (retransmitting meanwhile).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// SIGINT (Ctrl-C) and SIGTERM, installed before anything else happens so
/// that neither can kill the client without its goodbyes.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let e = |e: std::io::Error| format!("cannot handle signals: {e}");
        Ok(Self {
            int: signal(SignalKind::interrupt()).map_err(e)?,
            term: signal(SignalKind::terminate()).map_err(e)?,
        })
    }

    /// Waits for either signal; returns its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// The codecs in `names`, or an error at once if this client cannot encode
/// and decode one of them (it must never offer or accept what it cannot carry).
fn codecs_arg(names: &[String]) -> Result<Vec<Codec>, String> {
    Codec::parse_supported(names).map_err(|e| format!("--codecs: {e}"))
}

/// Checks `--dtmf` before anything is sent: a bad digit found only once
/// the call is answered would ring the callee for nothing.
fn dtmf_arg(digits: &str) -> CliResult {
    match digits
        .chars()
        .find(|&c| !u8::try_from(c).is_ok_and(anytun::wire::e2e::is_dtmf_digit))
    {
        Some(c) => Err(format!(
            "--dtmf: {} (digits: 0-9 * # A-D)",
            ClientError::BadDigit(c)
        )),
        None => Ok(()),
    }
}

/// The name this command registers or calls as, when it knows one: error
/// hints use it instead of a placeholder.
static OWN_NAME: std::sync::OnceLock<Name> = std::sync::OnceLock::new();

/// A client error in words, with this command's own name where the
/// library can only say NAME.
fn client_error(e: ClientError) -> String {
    match (&e, OWN_NAME.get()) {
        (ClientError::NotAuthorized { key }, Some(name)) => format!(
            "the proxy refused this client's key {key}: it is not in the subscriber store \
             (add it with: anytun user add {name} {key})"
        ),
        _ => e.to_string(),
    }
}

/// Starts a client and waits for its session. `max_calls`: calls beyond
/// are refused as busy by the client itself. `media`: the media options
/// of a command that carries calls (defaults otherwise).
async fn connect(
    args: &ClientArgs,
    media: Option<&MediaArgs>,
    sink: VoiceSink,
    max_calls: usize,
) -> Result<(ClientRuntime, UnboundedReceiver<Event>), String> {
    let mut cfg = args.config()?;
    cfg.max_calls = max_calls;
    if let Some(m) = media {
        cfg.media_timeout = Duration::from_secs_f64(m.media_timeout);
    }
    let (rt, mut rx) =
        ClientRuntime::start(cfg, args.proxy.addr, sink).map_err(|e| e.to_string())?;
    loop {
        match rx.recv().await {
            Some(Event::Connected {
                session,
                proxy,
                observed,
            }) => {
                eprintln!(
                    "connected to proxy {proxy} at {} (session {session}, seen as {observed})",
                    args.proxy
                );
                return Ok((rt, rx));
            }
            Some(Event::ClockCorrected(skew)) => eprintln!("warning: {skew}; corrected"),
            Some(Event::Disconnected(e)) => return Err(client_error(e)),
            Some(_) => {}
            None => return Err("client stopped".into()),
        }
    }
}

/// Ends the client's calls and registrations and waits (at most
/// [`CLOSE_WAIT`]) until the proxy has acknowledged them.
async fn close(rt: &ClientRuntime) {
    if !rt.close(CLOSE_WAIT).await {
        eprintln!(
            "the proxy did not acknowledge the hangup/unregistration within {} s",
            CLOSE_WAIT.as_secs()
        );
    }
}

async fn register_and_wait(
    rt: &ClientRuntime,
    rx: &mut UnboundedReceiver<Event>,
    name: &Name,
    expires: u32,
) -> CliResult {
    rt.register(name.clone(), expires).await;
    loop {
        match rx.recv().await {
            Some(Event::Registered { name: n, expires_s }) if &n == name => {
                eprintln!("registered {n} for {expires_s} s");
                return Ok(());
            }
            Some(Event::RegisterFailed { name: n }) if &n == name => {
                return Err(format!(
                    "the proxy refused to register {n}: this key is not authorised for that name"
                ))
            }
            Some(Event::Disconnected(e)) => return Err(client_error(e)),
            Some(_) => {}
            None => return Err("client stopped".into()),
        }
    }
}

/// What the client does with session-level events while it waits for
/// something else: reports losses and recoveries; a final disconnection
/// (replaced by a newer login, refused) is an error.
fn session_event(ev: Option<Event>) -> CliResult {
    match ev {
        Some(Event::Disconnected(e)) => Err(client_error(e)),
        Some(Event::ClockCorrected(skew)) => {
            eprintln!("warning: {skew}; corrected");
            Ok(())
        }
        Some(Event::CallRefused { from, cause, .. }) => {
            eprintln!("refused a call from {from}: {cause}");
            Ok(())
        }
        Some(Event::Reconnecting(e)) => {
            eprintln!("{e}; connecting again");
            Ok(())
        }
        Some(Event::Connected { session, .. }) => {
            eprintln!("connected again (session {session})");
            Ok(())
        }
        Some(Event::Registered { name, expires_s }) => {
            log::debug!("registered {name} for {expires_s} s");
            Ok(())
        }
        Some(_) => Ok(()),
        None => Err("client stopped".into()),
    }
}

fn load_audio(path: &Path) -> Result<Vec<i16>, String> {
    read_wav(path).map_err(|e| e.to_string())
}

/// Writes what was received to `path`, whatever happened to the call (an
/// empty file if nothing was ever received).
fn save_recording(path: &Option<PathBuf>, recorder: &CallRecorder) -> CliResult {
    recorder.with(|rec| {
        if let Some(rec) = rec {
            eprintln!("received {} frames", rec.frames_received());
        }
        if let Some(p) = path {
            let samples = rec.map_or(&[][..], |r| r.samples());
            write_wav(p, samples).map_err(|e| format!("{}: {e}", p.display()))?;
            let secs = samples.len() as f64 / 8000.0;
            eprintln!("recorded {secs:.2} s to {}", p.display());
        }
        Ok(())
    })
}

/// Plays `frames` into the call while watching for its end. Returns the
/// cause if the call ended (the other side hung up, or it failed), `None`
/// if the audio ended first and `wait_for_hangup` is false.
async fn run_call(
    rt: &ClientRuntime,
    rx: &mut UnboundedReceiver<Event>,
    call: CallId,
    frames: &[Vec<u8>],
    wait_for_hangup: bool,
) -> Result<Option<Cause>, String> {
    let stop = AtomicBool::new(false);
    let play = media::play(rt, call, frames, &stop, |_| {});
    tokio::pin!(play);
    let mut played = false;
    loop {
        tokio::select! {
            r = &mut play, if !played => {
                played = true;
                match r {
                    Ok(n) => eprintln!("sent {n} frames"),
                    // The call ended under us; its CallEnded event, with
                    // the cause, is on its way.
                    Err(ClientError::UnknownCall(_) | ClientError::CallState { .. }) => continue,
                    Err(e) => return Err(e.to_string()),
                }
                if !wait_for_hangup {
                    return Ok(None);
                }
            }
            ev = rx.recv() => match ev {
                Some(Event::CallEnded { call: c, cause }) if c == call => {
                    stop.store(true, Ordering::Relaxed);
                    return Ok(Some(cause));
                }
                Some(Event::Dtmf { digit, .. }) => eprintln!("DTMF {digit}"),
                // A second call is refused by the client itself (max_calls
                // 1) and reported as Event::CallRefused.
                other => session_event(other)?,
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn cmd_call(
    name: Name,
    play: PathBuf,
    record: Option<PathBuf>,
    as_name: Option<Name>,
    codecs: Vec<String>,
    dtmf: Option<String>,
    media: MediaArgs,
    args: ClientArgs,
) -> CliResult {
    if let Some(n) = &as_name {
        let _ = OWN_NAME.set(n.clone());
    }
    codecs_arg(&codecs)?;
    if let Some(digits) = &dtmf {
        dtmf_arg(digits)?;
    }
    let audio = load_audio(&play)?;
    let mut signals = Signals::new()?;
    let recorder = CallRecorder::new();
    let (rt, mut rx) = tokio::select! {
        r = connect(&args, Some(&media), recorder.sink(), 1) => r?,
        s = signals.recv() => return Err(format!("interrupted by {s}")),
    };
    let result = tokio::select! {
        r = call_flow(&rt, &mut rx, &recorder, &name, as_name, codecs, dtmf, &audio) => r,
        s = signals.recv() => Err(format!("interrupted by {s}: hung up")),
    };
    close(&rt).await;
    let saved = save_recording(&record, &recorder);
    result.and(saved)
}

/// `anytun call` once connected: place the call, play, hang up.
#[allow(clippy::too_many_arguments)]
async fn call_flow(
    rt: &ClientRuntime,
    rx: &mut UnboundedReceiver<Event>,
    recorder: &CallRecorder,
    name: &Name,
    as_name: Option<Name>,
    codecs: Vec<String>,
    dtmf: Option<String>,
    audio: &[i16],
) -> CliResult {
    let call = rt
        .call(name.clone(), as_name, codecs)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("calling {name} (call {call})");
    let codec = loop {
        match rx.recv().await {
            Some(Event::Ringing { .. }) => eprintln!("ringing"),
            Some(Event::Answered { codec, .. }) => break Codec::from_name(&codec),
            Some(Event::EndToEndFailed { error, .. }) => {
                return Err(format!("call to {name} failed: {error}"))
            }
            Some(Event::CallEnded {
                cause: Cause::Unavailable,
                ..
            }) => {
                let hint = if may_register(rt, rx, name).await {
                    format!(
                        "\nhint: this key may also register {name}: if `anytun answer {name}` \
                         used this key, this login replaced its session; each device needs its \
                         own key (one key = one session)"
                    )
                } else {
                    String::new()
                };
                return Err(format!(
                    "call to {name} failed: {}{hint}",
                    Cause::Unavailable
                ));
            }
            Some(Event::CallEnded { cause, .. }) => {
                return Err(format!("call to {name} failed: {cause}"))
            }
            other => session_event(other)?,
        }
    };
    eprintln!("answered, codec {codec}");
    let frames = media::encode_frames(&codec, audio).map_err(|e| e.to_string())?;
    recorder.start(codec, frames.len(), call);
    if let Some(digits) = dtmf {
        for d in digits.chars() {
            rt.send_dtmf(call, d, 100)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let ended = match run_call(rt, rx, call, &frames, false).await? {
        None => {
            // Let the last frames from the other side land, then hang up
            // (the caller of this waits for the acknowledgement). The other
            // side may hang up meanwhile: then report its cause, not "no
            // call".
            match ended_within(rx, call, Duration::from_millis(300)).await {
                Some(cause) => Some(cause),
                None => match rt.hangup(call, Cause::Normal).await {
                    Ok(()) => return Ok(()),
                    // It ended between the wait and the hangup: its
                    // CallEnded event is on the way.
                    Err(_) => ended_within(rx, call, Duration::from_secs(2)).await,
                },
            }
        }
        other => other,
    };
    match ended {
        None => Err(format!("the call with {name} ended with no cause reported")),
        Some(Cause::Normal) => {
            eprintln!("{name} hung up: {}", Cause::Normal);
            Ok(())
        }
        Some(cause) => Err(format!("the call with {name} ended: {cause}")),
    }
}

/// The cause with which `call` ends within `wait`, if it does (DTMF is
/// shown as run_call shows it; other events are consumed).
async fn ended_within(
    rx: &mut UnboundedReceiver<Event>,
    call: CallId,
    wait: Duration,
) -> Option<Cause> {
    let end = async {
        loop {
            match rx.recv().await {
                Some(Event::CallEnded { call: c, cause }) if c == call => return Some(cause),
                // As run_call shows them: a late digit is still reported.
                Some(Event::Dtmf { digit, .. }) => eprintln!("DTMF {digit}"),
                Some(_) => {}
                None => return None,
            }
        }
    };
    tokio::time::timeout(wait, end).await.ok().flatten()
}

/// How long [`may_register`] waits for the proxy's answer.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// Whether this client's key may register `name`: asks the proxy to
/// remove a registration of `name` that this session does not have (a
/// no-op), which it refuses only for a key not authorised for the name.
/// Used after a call to `name` found nobody registered: if this key may
/// register it, this very login has likely replaced the session of the
/// `anytun answer` that used the same key (one key = one session).
async fn may_register(rt: &ClientRuntime, rx: &mut UnboundedReceiver<Event>, name: &Name) -> bool {
    rt.register(name.clone(), 0).await;
    let answer = async {
        loop {
            match rx.recv().await {
                Some(Event::Registered { name: n, .. }) if &n == name => return true,
                Some(Event::RegisterFailed { name: n }) if &n == name => return false,
                Some(_) => {}
                None => return false,
            }
        }
    };
    tokio::time::timeout(PROBE_WAIT, answer)
        .await
        .unwrap_or(false)
}

/// Where `answer --record base` writes call number `n` (from 1) of
/// `calls`: `base` itself for a single call, else `base` with `-n` before
/// its extension (heard.wav: heard-1.wav, heard-2.wav, ...), so no call
/// overwrites another's recording.
fn record_path(base: &Path, n: u32, calls: u32) -> PathBuf {
    if calls <= 1 {
        return base.to_owned();
    }
    let stem = base.file_stem().unwrap_or_default().to_string_lossy();
    let file = match base.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    base.with_file_name(file)
}

async fn cmd_answer(
    name: Name,
    play: Option<PathBuf>,
    record: Option<PathBuf>,
    accept: Vec<String>,
    calls: u32,
    media: MediaArgs,
    args: ClientArgs,
) -> CliResult {
    let _ = OWN_NAME.set(name.clone());
    let supported = codecs_arg(&accept)?;
    let audio = match &play {
        Some(p) => load_audio(p)?,
        None => vec![0; 8000],
    };
    let mut signals = Signals::new()?;
    let recorder = CallRecorder::new();
    // Whether the last call's recording (or, before any call, the empty
    // one) is still to be written: each call's is written once.
    let unsaved = Cell::new(true);
    // One call at a time: a second Invite is refused as busy at once.
    let (rt, mut rx) = tokio::select! {
        r = connect(&args, Some(&media), recorder.sink(), 1) => r?,
        s = signals.recv() => {
            eprintln!("stopped by {s}");
            return Ok(());
        }
    };
    // The number of the call being (or last) taken, for its recording's file.
    let current = Cell::new(1);
    let result = tokio::select! {
        r = answer_flow(&rt, &mut rx, &recorder, &unsaved, &current, &record, &name, &supported, &audio, calls) => r,
        s = signals.recv() => {
            eprintln!("stopped by {s}");
            Ok(())
        }
    };
    close(&rt).await;
    if !unsaved.get() {
        return result;
    }
    let path = record.map(|r| record_path(&r, current.get(), calls));
    let saved = save_recording(&path, &recorder);
    result.and(saved)
}

/// `anytun answer` once connected: register, then take `calls` calls. A
/// call that another device of the name answered first does not count.
#[allow(clippy::too_many_arguments)]
async fn answer_flow(
    rt: &ClientRuntime,
    rx: &mut UnboundedReceiver<Event>,
    recorder: &CallRecorder,
    unsaved: &Cell<bool>,
    current: &Cell<u32>,
    record: &Option<PathBuf>,
    name: &Name,
    supported: &[Codec],
    audio: &[i16],
    calls: u32,
) -> CliResult {
    register_and_wait(rt, rx, name, 300).await?;
    let mut taken = 0;
    while taken < calls {
        current.set(taken + 1);
        let (call, from, offer) = loop {
            match rx.recv().await {
                Some(Event::IncomingCall {
                    call, from, codecs, ..
                }) => break (call, from, codecs),
                other => session_event(other)?,
            }
        };
        let offered: Vec<Codec> = offer.iter().map(|c| Codec::from_name(c)).collect();
        let Some(codec) = anytun::audio::negotiate(&offered, supported) else {
            eprintln!("call from {from}: no common codec (offered {offer:?})");
            let _ = rt.reject(call, Cause::IncompatibleCodecs).await;
            continue;
        };
        eprintln!("call from {from}, answering with {codec}");
        let cause = match rt.answer(call, codec.name()).await {
            Ok(()) => {
                let frames = media::encode_frames(&codec, audio).map_err(|e| e.to_string())?;
                recorder.start(codec, frames.len(), call);
                unsaved.set(true);
                run_call(rt, rx, call, &frames, true).await?
            }
            // The call ended before our answer left: its cause is coming.
            Err(ClientError::UnknownCall(_)) => loop {
                match rx.recv().await {
                    Some(Event::CallEnded { call: c, cause }) if c == call => break Some(cause),
                    other => session_event(other)?,
                }
            },
            Err(e) => return Err(e.to_string()),
        };
        match cause {
            Some(Cause::AnsweredElsewhere) => {
                eprintln!(
                    "call from {from} was answered on another device ({}); waiting for the next call",
                    Cause::AnsweredElsewhere
                );
                continue;
            }
            Some(c) => eprintln!("call ended: {c}"),
            None => {}
        }
        unsaved.set(false);
        let path = record.as_ref().map(|r| record_path(r, taken + 1, calls));
        save_recording(&path, recorder)?;
        taken += 1;
    }
    Ok(())
}

async fn cmd_register(name: Name, expires: u32, args: ClientArgs) -> CliResult {
    let _ = OWN_NAME.set(name.clone());
    let mut signals = Signals::new()?;
    // Calls are refused here, so no voice ever arrives.
    let (rt, mut rx) = tokio::select! {
        r = connect(&args, None, Box::new(|_| {}), 16) => r?,
        s = signals.recv() => {
            eprintln!("stopped by {s}");
            return Ok(());
        }
    };
    let result = tokio::select! {
        r = register_flow(&rt, &mut rx, &name, expires) => r,
        s = signals.recv() => {
            eprintln!("stopped by {s}; unregistering {name}");
            Ok(())
        }
    };
    close(&rt).await;
    result
}

/// `anytun register` once connected: stay registered, refuse calls as busy.
async fn register_flow(
    rt: &ClientRuntime,
    rx: &mut UnboundedReceiver<Event>,
    name: &Name,
    expires: u32,
) -> CliResult {
    register_and_wait(rt, rx, name, expires).await?;
    loop {
        match rx.recv().await {
            Some(Event::IncomingCall { call, from, .. }) => {
                eprintln!(
                    "refused a call from {from}: {} (use `anytun answer` to take calls)",
                    Cause::Busy
                );
                let _ = rt.reject(call, Cause::Busy).await;
            }
            other => session_event(other)?,
        }
    }
}

/// Runs a `user` subcommand on the store the daemon reads: `--db` if
/// given, else the one the shared config names. Says which store (absolute
/// path) it read or changed.
fn cmd_user(cmd: UserCmd, config: Option<&Path>, db: Option<&Path>) -> CliResult {
    let (path, from) = match db {
        Some(db) => (config::absolute(db), "--db / ANYTUN_DB".to_owned()),
        None => {
            let (cfg, origin) = config::locate(config).map_err(|e| e.to_string())?;
            (config::absolute(&cfg.subscribers), origin.to_string())
        }
    };
    let store_name = path.display();
    // Parse keys before touching the store, so a refused key creates nothing.
    let key = match &cmd {
        UserCmd::Add { key, .. } => Some(subscriber_key(key)?),
        UserCmd::Remove { key: Some(key), .. } => Some(subscriber_key(key)?),
        _ => None,
    };
    let store = SubscriberStore::open(&path).map_err(|e| e.to_string())?;
    match cmd {
        UserCmd::Add { name, .. } => {
            let key = key.expect("parsed above");
            if store
                .add(name.as_str(), &key.0)
                .map_err(|e| e.to_string())?
            {
                println!("added {name} {key} to {store_name}");
            } else {
                println!("{name} {key} was already in {store_name}");
            }
        }
        UserCmd::List { removed: false } => {
            // stdout stays one "name<TAB>key" line per pair, for scripts.
            eprintln!("subscribers in {store_name} ({from}):");
            for s in store.list().map_err(|e| e.to_string())? {
                println!("{}\t{}", s.name, PublicKey(s.public_key));
            }
        }
        UserCmd::List { removed: true } => {
            // "name<TAB>key<TAB>removed-at ms since the Unix epoch".
            eprintln!("removed keys kept as tombstones in {store_name} ({from}):");
            for s in store.list_removed().map_err(|e| e.to_string())? {
                println!("{}\t{}\t{}", s.name, PublicKey(s.public_key), s.changed_ms);
            }
        }
        UserCmd::Remove { name, .. } => {
            let n = store
                .remove(name.as_str(), key.as_ref().map(|k| &k.0))
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("no such subscriber in {store_name}: {name}"));
            }
            println!("removed {n} key(s) of {name} from {store_name}");
        }
    }
    Ok(())
}

/// `anytun peers` (`peers_only`) and `anytun status`: reads `/status` from
/// the daemon's metrics listener and prints it.
async fn cmd_status(args: StatusArgs, peers_only: bool) -> CliResult {
    let addr = match args.metrics {
        Some(a) => a,
        None => {
            let (cfg, origin) =
                config::locate(args.config.as_deref()).map_err(|e| e.to_string())?;
            cfg.metrics_listen.ok_or_else(|| {
                format!("metrics are off in {origin} (metrics_listen = \"\"); give --metrics ADDR")
            })?
        }
    };
    let status = anytun::metrics::fetch_status(&addr)
        .await
        .map_err(|e| e.to_string())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?
        );
    } else if peers_only {
        print!("{}", status.peer_table());
        println!("{}", status.summary());
    } else {
        println!("{}", status.summary());
        print!("{}", status.peer_table());
    }
    Ok(())
}

async fn cmd_demo(json: bool, seconds: f64, codec: String) -> Result<bool, String> {
    let codec = Codec::from_name(&codec);
    if codec.frame_bytes().is_none() {
        return Err(format!("the demo can use ulaw, alaw or slin, not {codec}"));
    }
    if !(0.1..=3600.0).contains(&seconds) {
        return Err("--seconds must be between 0.1 and 3600".into());
    }
    let opts = DemoOptions {
        seconds,
        codec,
        ..DemoOptions::default()
    };
    if !json {
        eprintln!(
            "starting a proxy and two clients on loopback; the call carries {seconds:.1} s of audio each way..."
        );
    }
    let report = demo::run(&opts).await.map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.human());
    }
    Ok(report.ok)
}

/// `anytun demo` as root: the anycast lab demo (src/demo/lab.rs).
async fn cmd_lab_demo(json: bool, seconds: f64) -> Result<bool, String> {
    if !(1.0..=3600.0).contains(&seconds) {
        return Err("--seconds must be between 1 and 3600 for the lab demo".into());
    }
    if !json {
        eprintln!(
            "bringing up the anycast lab (namespaces atldemo-*); a call from site A to site B \
             carries {seconds:.1} s of audio each way, and the proxy serving the caller is killed \
             a third of the way in..."
        );
    }
    let (report, story) = demo::lab::run(seconds, None)
        .await
        .map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", demo::lab::human(&report, &story));
    }
    Ok(report.ok)
}

async fn cmd_demo_failover(json: bool, seconds: f64, proxies: usize) -> Result<bool, String> {
    if !(2..=8).contains(&proxies) {
        return Err("--proxies must be between 2 and 8".into());
    }
    if !(1.0..=3600.0).contains(&seconds) {
        return Err("--seconds must be between 1 and 3600 for the failover demo".into());
    }
    if !json {
        eprintln!(
            "starting {proxies} proxies on one loopback port and two clients; the proxy \
             serving one side is stopped a third into {seconds:.1} s of voice..."
        );
    }
    let report = demo::failover::run(proxies, seconds).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.human());
    }
    Ok(report.ok)
}

async fn run(cli: Cli) -> Result<bool, String> {
    match cli.cmd {
        Cmd::Keygen { out } => {
            let key = SecretKey::generate();
            match out {
                Some(path) => {
                    key.write_new_file(&path).map_err(|e| e.to_string())?;
                    eprintln!("wrote private key to {}", path.display());
                }
                None => println!("private key: {}", key.to_base64()),
            }
            println!("public key: {}", key.public());
        }
        Cmd::Pubkey { key, file } => {
            let path = key
                .or(file)
                .ok_or("give the private key file: --key FILE")?;
            let k = SecretKey::read_file(&path).map_err(|e| e.to_string())?;
            println!("{}", k.public());
        }
        Cmd::User { cmd, config, db } => cmd_user(cmd, config.as_deref(), db.as_deref())?,
        Cmd::Peers { target } => cmd_status(target, true).await?,
        Cmd::Status { target } => cmd_status(target, false).await?,
        Cmd::Register {
            name,
            expires,
            client,
        } => cmd_register(name, expires, client).await?,
        Cmd::Call {
            name,
            play,
            record,
            as_name,
            codecs,
            dtmf,
            media,
            client,
        } => cmd_call(name, play, record, as_name, codecs, dtmf, media, client).await?,
        Cmd::Answer {
            name,
            play,
            record,
            codecs,
            calls,
            media,
            client,
        } => cmd_answer(name, play, record, codecs, calls, media, client).await?,
        Cmd::Demo {
            json,
            seconds,
            proxies,
            ..
        } if proxies > 1 => return cmd_demo_failover(json, seconds, proxies).await,
        Cmd::Demo {
            json,
            seconds,
            codec,
            loopback,
            proxies: 1,
        } => {
            if !loopback {
                // As root, missing lab tools are installed (Debian packages).
                let ready = match anytun::lab::preflight() {
                    Err(anytun::lab::LabError::Missing { .. }) => {
                        eprintln!("installing the lab's tools (bird2, nftables, conntrack)...");
                        anytun::lab::install_tools().and_then(|()| anytun::lab::preflight())
                    }
                    other => other,
                };
                match ready {
                    Ok(()) => return cmd_lab_demo(json, seconds).await,
                    Err(e) => {
                        eprintln!("not running the anycast lab demo: {e}; running on loopback")
                    }
                }
            }
            return cmd_demo(json, seconds, codec).await;
        }
        Cmd::Lab { cmd, opts } => {
            let out = tokio::task::spawn_blocking(move || anytun::lab::cli::run(cmd, opts))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            print!("{out}");
        }
        Cmd::Demo {
            json,
            seconds,
            proxies,
            ..
        } => return cmd_demo_failover(json, seconds, proxies).await,
    }
    Ok(true)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("anytun: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("anytun: error: {e}");
            ExitCode::FAILURE
        }
    }
}
