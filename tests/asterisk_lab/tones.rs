//! Test sounds for the Asterisk tests and their analysis: a sine tone
//! followed by in-band DTMF digits, and what a recording holds (the tone's
//! frequency, the DTMF digits decoded with Goertzel filters).

use std::f64::consts::PI;

const RATE: f64 = 8000.0;
const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

fn sine(out: &mut Vec<i16>, freqs: &[f64], secs: f64, amplitude: f64) {
    let n = (secs * RATE) as usize;
    let start = out.len();
    for i in 0..n {
        let t = (start + i) as f64 / RATE;
        let v: f64 = freqs.iter().map(|f| (2.0 * PI * f * t).sin()).sum();
        out.push((v * amplitude) as i16);
    }
}

fn silence(out: &mut Vec<i16>, secs: f64) {
    out.extend(std::iter::repeat_n(0, (secs * RATE) as usize));
}

/// `secs` of a `freq` Hz tone, then each digit as 100 ms of DTMF and 100 ms
/// of silence, then 200 ms of silence.
pub fn tone_and_digits(freq: f64, secs: f64, digits: &str) -> Vec<i16> {
    let mut out = Vec::new();
    sine(&mut out, &[freq], secs, 9000.0);
    silence(&mut out, 0.2);
    for d in digits.chars() {
        let (r, c) = KEYS
            .iter()
            .enumerate()
            .find_map(|(r, row)| row.iter().position(|&k| k == d).map(|c| (r, c)))
            .expect("a DTMF digit");
        sine(&mut out, &[ROWS[r], COLS[c]], 0.1, 6000.0);
        silence(&mut out, 0.1);
    }
    silence(&mut out, 0.2);
    out
}

/// Power of `freq` in `block` (Goertzel).
fn goertzel(block: &[i16], freq: f64) -> f64 {
    let k = 2.0 * (2.0 * PI * freq / RATE).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in block {
        let s = x as f64 + k * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}

fn energy(block: &[i16]) -> f64 {
    block.iter().map(|&x| (x as f64) * (x as f64)).sum()
}

/// What a recording holds.
#[derive(Debug)]
pub struct Analysis {
    /// Seconds of audio in the recording.
    pub seconds: f64,
    /// The strongest frequency (5 Hz steps, 200..3500 Hz) of the longest
    /// run of one steady tone, and how long that run is (seconds).
    pub tone_hz: Option<f64>,
    /// See `tone_hz`.
    pub tone_seconds: f64,
    /// DTMF digits decoded from the audio, in order.
    pub digits: String,
}

/// Whether a 20 ms block is mostly one pure tone at `f` Hz.
fn is_tone(block: &[i16], f: f64) -> bool {
    let e = energy(block);
    // A sine of amplitude A over N samples has Goertzel power ~ (A N / 2)^2
    // and energy A^2 N / 2: the ratio is N / 2 for a pure tone.
    e > 1e6 && goertzel(block, f) / e > 0.6 * block.len() as f64 / 2.0
}

/// Analyses 8000 Hz mono samples.
pub fn analyse(samples: &[i16]) -> Analysis {
    let block = 160;
    let blocks: Vec<&[i16]> = samples.chunks_exact(block).collect();
    // The tone: the strongest frequency of the loudest second, refined over
    // the longest run of blocks that carry it.
    let mut best = (0.0, 0.0);
    for b in blocks.iter().filter(|b| energy(b) > 1e6) {
        for f in (200..=3500).step_by(50) {
            let p = goertzel(b, f as f64);
            if p > best.1 {
                best = (f as f64, p);
            }
        }
    }
    let (mut tone_hz, mut tone_seconds) = (None, 0.0);
    if best.1 > 0.0 {
        // Longest run of blocks with a pure tone near the coarse estimate.
        let (mut run, mut longest, mut end) = (0, 0, 0);
        for (i, b) in blocks.iter().enumerate() {
            if (-50..=50)
                .step_by(10)
                .any(|d| is_tone(b, best.0 + d as f64))
            {
                run += 1;
                if run > longest {
                    longest = run;
                    end = i + 1;
                }
            } else {
                run = 0;
            }
        }
        if longest >= 5 {
            let seg = &samples[(end - longest) * block..end * block];
            let mut fine = (0.0, 0.0);
            let mut f = best.0 - 60.0;
            while f <= best.0 + 60.0 {
                let p = goertzel(seg, f);
                if p > fine.1 {
                    fine = (f, p);
                }
                f += 1.0;
            }
            tone_hz = Some(fine.0);
            tone_seconds = longest as f64 * block as f64 / RATE;
        }
    }
    // DTMF: a block is a digit when its strongest row and column carry most
    // of its energy; a digit is two or more such blocks in a row.
    let mut digits = String::new();
    let (mut current, mut count) = (None, 0);
    for b in &blocks {
        let e = energy(b);
        let row = ROWS.map(|f| goertzel(b, f));
        let col = COLS.map(|f| goertzel(b, f));
        let (ri, rp) = max_of(&row);
        let (ci, cp) = max_of(&col);
        let n2 = b.len() as f64 / 2.0;
        let key = (e > 1e6 && (rp + cp) / e > 0.5 * n2).then(|| KEYS[ri][ci]);
        if let (Some(k), true) = (key, key == current) {
            count += 1;
            if count == 2 {
                digits.push(k);
            }
        } else {
            current = key;
            count = 1;
        }
    }
    Analysis {
        seconds: samples.len() as f64 / RATE,
        tone_hz,
        tone_seconds,
        digits,
    }
}

fn max_of(p: &[f64; 4]) -> (usize, f64) {
    p.iter()
        .copied()
        .enumerate()
        .fold((0, f64::MIN), |a, (i, v)| if v > a.1 { (i, v) } else { a })
}

#[test]
fn analysis_finds_what_was_generated() {
    let s = tone_and_digits(1000.0, 1.0, "159*#");
    let a = analyse(&s);
    assert_eq!(a.digits, "159*#");
    assert!((a.tone_hz.unwrap() - 1000.0).abs() <= 2.0, "{a:?}");
    assert!(a.tone_seconds >= 0.95, "{a:?}");
    let silent = analyse(&[0; 8000]);
    assert_eq!((silent.tone_hz, silent.digits.as_str()), (None, ""));
}
