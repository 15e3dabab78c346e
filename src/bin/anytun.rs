//! `anytun`: the command-line tool. Keys, subscribers, and a client that can
//! register, call and answer with real audio files; plus the built-in demo.

use anytun::audio::{read_wav, write_wav, Codec};
use anytun::call::{Cause, Name};
use anytun::client::{ClientConfig, Event};
use anytun::crypto::{PublicKey, SecretKey};
use anytun::demo::{self, DemoOptions};
use anytun::media::{self, CallRecorder};
use anytun::runtime::client::{ClientRuntime, VoiceSink};
use anytun::session::CallId;
use anytun::store::SubscriberStore;
use clap::{Args, Parser, Subcommand};
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
        key: PathBuf,
    },
    /// Manage the subscriber store (names and authorised client keys).
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        /// The SQLite subscriber store.
        #[arg(
            long,
            global = true,
            env = "ANYTUN_DB",
            default_value = "anytun-state/subscribers.db"
        )]
        db: PathBuf,
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
        /// How many calls to take before exiting.
        #[arg(long, default_value_t = 1)]
        calls: u32,
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
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Authorise a client key for a name.
    Add {
        /// The name.
        name: Name,
        /// The client's public key (base64, from `anytun keygen`).
        key: PublicKey,
    },
    /// List names and keys.
    List,
    /// Remove a name's key (or all its keys).
    Remove {
        /// The name.
        name: Name,
        /// Only this key.
        key: Option<PublicKey>,
    },
}

#[derive(Args, Clone)]
struct ClientArgs {
    /// This client's private key file.
    #[arg(long, env = "ANYTUN_KEY")]
    key: PathBuf,
    /// The network's public key (base64), or a file holding it.
    #[arg(long, env = "ANYTUN_NETWORK_KEY")]
    network_key: String,
    /// The proxy (anycast) address.
    #[arg(long, env = "ANYTUN_PROXY", default_value = "127.0.0.1:7475")]
    proxy: SocketAddr,
    /// Keepalive interval in seconds (default: what the proxy says).
    #[arg(long)]
    keepalive: Option<u64>,
}

type CliResult = Result<(), String>;

fn network_key(text: &str) -> Result<PublicKey, String> {
    let path = Path::new(text);
    if path.is_file() {
        let s = std::fs::read_to_string(path).map_err(|e| format!("{text}: {e}"))?;
        return PublicKey::from_base64(&s).map_err(|e| format!("{text}: {e}"));
    }
    PublicKey::from_base64(text).map_err(|e| format!("--network-key: {e}"))
}

impl ClientArgs {
    fn config(&self) -> Result<ClientConfig, String> {
        let secret = SecretKey::read_file(&self.key).map_err(|e| e.to_string())?;
        let mut cfg = ClientConfig::new(secret, network_key(&self.network_key)?);
        cfg.keepalive = self.keepalive.map(Duration::from_secs);
        Ok(cfg)
    }
}

/// Starts a client and waits for its session.
async fn connect(
    args: &ClientArgs,
    sink: VoiceSink,
) -> Result<(ClientRuntime, UnboundedReceiver<Event>), String> {
    let (rt, mut rx) =
        ClientRuntime::start(args.config()?, args.proxy, sink).map_err(|e| e.to_string())?;
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
            Some(Event::Disconnected(e)) => return Err(e.to_string()),
            Some(_) => {}
            None => return Err("client stopped".into()),
        }
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
            Some(Event::Disconnected(e)) => return Err(e.to_string()),
            Some(_) => {}
            None => return Err("client stopped".into()),
        }
    }
}

fn load_audio(path: &Path) -> Result<Vec<i16>, String> {
    read_wav(path).map_err(|e| e.to_string())
}

fn save_recording(path: &Option<PathBuf>, recorder: &CallRecorder) -> CliResult {
    recorder.with(|rec| {
        let Some(rec) = rec else {
            return Ok(());
        };
        eprintln!("received {} frames", rec.frames_received());
        if let Some(p) = path {
            write_wav(p, rec.samples()).map_err(|e| e.to_string())?;
            let secs = rec.samples().len() as f64 / 8000.0;
            eprintln!("recorded {secs:.2} s to {}", p.display());
        }
        Ok(())
    })
}

/// Plays `frames` into the call while watching for its end. Returns the
/// cause if the other side ended it.
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
    let mut ended = None;
    let mut played = false;
    loop {
        tokio::select! {
            r = &mut play, if !played => {
                let n = r.map_err(|e| e.to_string())?;
                eprintln!("sent {n} frames");
                played = true;
                if !wait_for_hangup {
                    return Ok(None);
                }
            }
            ev = rx.recv() => match ev {
                Some(Event::CallEnded { call: c, cause }) if c == call => {
                    stop.store(true, Ordering::Relaxed);
                    ended = Some(cause);
                    if played { return Ok(ended); }
                }
                Some(Event::Dtmf { digit, .. }) => eprintln!("DTMF {digit}"),
                Some(Event::Disconnected(e)) => return Err(e.to_string()),
                Some(_) => {}
                None => return Err("client stopped".into()),
            }
        }
        if ended.is_some() && played {
            return Ok(ended);
        }
    }
}

async fn cmd_call(
    name: Name,
    play: PathBuf,
    record: Option<PathBuf>,
    as_name: Option<Name>,
    codecs: Vec<String>,
    dtmf: Option<String>,
    args: ClientArgs,
) -> CliResult {
    let audio = load_audio(&play)?;
    let recorder = CallRecorder::new();
    let (rt, mut rx) = connect(&args, recorder.sink()).await?;
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
            Some(Event::CallEnded { cause, .. }) => {
                return Err(format!("call to {name} failed: {cause}"))
            }
            Some(Event::Disconnected(e)) => return Err(e.to_string()),
            Some(_) => {}
            None => return Err("client stopped".into()),
        }
    };
    eprintln!("answered, codec {codec}");
    let frames = media::encode_frames(&codec, &audio).map_err(|e| e.to_string())?;
    recorder.start(codec, frames.len(), call);
    if let Some(digits) = dtmf {
        for d in digits.chars() {
            rt.send_dtmf(call, d, 100)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let ended = run_call(&rt, &mut rx, call, &frames, false).await?;
    if ended.is_none() {
        // Let the last frames from the other side land, then hang up.
        tokio::time::sleep(Duration::from_millis(300)).await;
        rt.hangup(call, Cause::Normal)
            .await
            .map_err(|e| e.to_string())?;
        // Give the hangup a moment to leave before the process exits.
        tokio::time::sleep(Duration::from_millis(100)).await;
    } else if let Some(cause) = ended {
        eprintln!("{name} hung up: {cause}");
    }
    save_recording(&record, &recorder)
}

async fn cmd_answer(
    name: Name,
    play: Option<PathBuf>,
    record: Option<PathBuf>,
    accept: Vec<String>,
    calls: u32,
    args: ClientArgs,
) -> CliResult {
    let audio = match &play {
        Some(p) => load_audio(p)?,
        None => vec![0; 8000],
    };
    let recorder = CallRecorder::new();
    let (rt, mut rx) = connect(&args, recorder.sink()).await?;
    register_and_wait(&rt, &mut rx, &name, 300).await?;
    let supported: Vec<Codec> = accept.iter().map(|c| Codec::from_name(c)).collect();
    for _ in 0..calls {
        let (call, from, offer) = loop {
            match rx.recv().await {
                Some(Event::IncomingCall {
                    call, from, codecs, ..
                }) => break (call, from, codecs),
                Some(Event::Disconnected(e)) => return Err(e.to_string()),
                Some(_) => {}
                None => return Err("client stopped".into()),
            }
        };
        let offered: Vec<Codec> = offer.iter().map(|c| Codec::from_name(c)).collect();
        let Some(codec) = anytun::audio::negotiate(&offered, &supported) else {
            eprintln!("call from {from}: no common codec (offered {offer:?})");
            let _ = rt.reject(call, Cause::IncompatibleCodecs).await;
            continue;
        };
        eprintln!("call from {from}, answering with {codec}");
        rt.answer(call, codec.name())
            .await
            .map_err(|e| e.to_string())?;
        let frames = media::encode_frames(&codec, &audio).map_err(|e| e.to_string())?;
        recorder.start(codec, frames.len(), call);
        let cause = run_call(&rt, &mut rx, call, &frames, true).await?;
        if let Some(c) = cause {
            eprintln!("call ended: {c}");
        }
        save_recording(&record, &recorder)?;
    }
    rt.register(name, 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

async fn cmd_register(name: Name, expires: u32, args: ClientArgs) -> CliResult {
    // Calls are refused here, so no voice ever arrives.
    let (rt, mut rx) = connect(&args, Box::new(|_| {})).await?;
    register_and_wait(&rt, &mut rx, &name, expires).await?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                rt.register(name, 0).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(());
            }
            ev = rx.recv() => match ev {
                Some(Event::IncomingCall { call, from, .. }) => {
                    eprintln!("call from {from}: refused as busy (use `anytun answer` to take calls)");
                    let _ = rt.reject(call, Cause::Busy).await;
                }
                Some(Event::Disconnected(e)) => {
                    eprintln!("{e}; reconnecting in 2 s");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    rt.reconnect().await;
                }
                Some(Event::Connected { session, .. }) => eprintln!("reconnected (session {session})"),
                Some(Event::Registered { name, expires_s }) => log::debug!("refreshed {name} for {expires_s} s"),
                Some(_) => {}
                None => return Err("client stopped".into()),
            }
        }
    }
}

fn cmd_user(cmd: UserCmd, db: &Path) -> CliResult {
    let store = SubscriberStore::open(db).map_err(|e| e.to_string())?;
    match cmd {
        UserCmd::Add { name, key } => {
            if store
                .add(name.as_str(), &key.0)
                .map_err(|e| e.to_string())?
            {
                println!("added {name} {key}");
            } else {
                println!("{name} {key} was already there");
            }
        }
        UserCmd::List => {
            for s in store.list().map_err(|e| e.to_string())? {
                println!("{}\t{}", s.name, PublicKey(s.public_key));
            }
        }
        UserCmd::Remove { name, key } => {
            let n = store
                .remove(name.as_str(), key.as_ref().map(|k| &k.0))
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("no such subscriber: {name}"));
            }
            println!("removed {n} key(s) of {name}");
        }
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
        Cmd::Pubkey { key } => {
            let k = SecretKey::read_file(&key).map_err(|e| e.to_string())?;
            println!("{}", k.public());
        }
        Cmd::User { cmd, db } => cmd_user(cmd, &db)?,
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
            client,
        } => cmd_call(name, play, record, as_name, codecs, dtmf, client).await?,
        Cmd::Answer {
            name,
            play,
            record,
            codecs,
            calls,
            client,
        } => cmd_answer(name, play, record, codecs, calls, client).await?,
        Cmd::Demo {
            json,
            seconds,
            codec,
        } => return cmd_demo(json, seconds, codec).await,
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
