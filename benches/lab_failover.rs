//! Issue 8's failover figures in the anycast lab, median and worst of
//! several runs: SIGKILL of the serving anytund (target: gap <= 60 ms at
//! both ends), SIGSTOP of the serving proxy and a black-holed link (BFD
//! notices: gap <= 100 ms), a graceful drain (0 frames lost); 0 calls
//! dropped and 0 handshakes repeated in every case.
//!
//! Each run is a call from site A (p1) to site B (p2) with the project's
//! own clients through real NAT, the knob turned on p1 one second into the
//! voice, the gap in received voice measured at both ends (largest silence
//! between arrivals, less one 20 ms frame); then the knob is undone and the
//! lab settled for the next run (docs/anycast-lab.md, "Figures").
//!
//! `cargo bench --bench lab_failover` runs ANYTUN_LAB_RUNS (default 5)
//! runs of each, 4 s calls. Under `cargo test` (no `--bench`) it runs a
//! smoke version: one run of each, 2 s calls (about 40 s), figures
//! labelled so. Needs root and the lab's tools, like tests/lab.rs, and the
//! machine to itself: run it under `flock /tmp/anytun-heavy.lock`. Timing
//! is printed, never asserted; outcomes (a call dropped, a handshake
//! repeated, a frame corrupted, a frame lost by a drain) fail the run.

use anytun::lab::measure::{self, Figures, FAILURES};
use anytun::lab::{preflight, Lab};
use std::time::{Duration, Instant};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runs: usize = if full {
        std::env::var("ANYTUN_LAB_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5)
    } else {
        1
    };
    let (seconds, at) = if full {
        (4.0, Duration::from_secs(1))
    } else {
        (2.0, Duration::from_millis(700))
    };
    if let Err(e) = preflight() {
        eprintln!("lab_failover: the anycast lab needs root and its tools: {e}");
        std::process::exit(1);
    }
    // The anytund cargo built with this bench.
    let anytund = Some(env!("CARGO_BIN_EXE_anytund").into());
    let lab = Lab::new("atlbench", None, anytund).expect("lab");
    let _ = lab.down();
    let t0 = Instant::now();
    let up = match lab.up() {
        Ok(up) => up,
        Err(e) => {
            let _ = lab.down();
            eprintln!("lab_failover: lab up failed: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "lab_failover ({}): lab up in {} ms; {runs} run(s) per failure, {seconds} s calls, \
         the knob {} ms into the voice",
        if full {
            "full"
        } else {
            "SMOKE: figures of one short run"
        },
        up.ready_after.as_millis(),
        at.as_millis()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut bad = Vec::new();
    for f in FAILURES {
        let mut figures = Figures::default();
        for i in 0..runs {
            let tag = format!("{:?}{i}", f.knob);
            match rt.block_on(measure::failover_call(&lab, f, seconds, at, &tag)) {
                Ok(r) => {
                    eprintln!("  {} run {i}: {r:?}", f.name);
                    figures.add(&r);
                }
                Err(e) => {
                    eprintln!("  {} run {i}: FAILED: {e}", f.name);
                    figures.dropped += 1;
                }
            }
            if let Err(e) = measure::undo_and_settle(&lab, f) {
                bad.push(format!(
                    "{}: the lab did not settle after run {i}: {e}",
                    f.name
                ));
                break;
            }
        }
        println!("{}: {}", f.name, figures.line());
        if figures.dropped > 0 || figures.handshakes_repeated > 0 || figures.corrupted > 0 {
            bad.push(format!("{}: {}", f.name, figures.line()));
        }
        if f.knob == anytun::lab::knobs::Knob::Withdraw && figures.lost.iter().any(|&n| n > 0) {
            bad.push(format!(
                "{}: frames lost in a drain: {:?}",
                f.name, figures.lost
            ));
        }
    }
    if let Err(e) = lab.down() {
        eprintln!("lab_failover: lab down failed: {e}");
    }
    println!("lab_failover: {:.1} s in all", t0.elapsed().as_secs_f64());
    if !bad.is_empty() {
        for b in &bad {
            eprintln!("lab_failover: FAILED: {b}");
        }
        std::process::exit(1);
    }
}
