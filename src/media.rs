//! Moving audio through a call: encoded frames out on a 20 ms clock, frames in
//! into a recording indexed by sequence number, and the check that what
//! arrived is what was sent.

use crate::audio::{Codec, CodecError, FRAME_MS, FRAME_SAMPLES};
use crate::client::{ClientError, VoiceFrame};
use crate::runtime::client::ClientRuntime;
use crate::session::CallId;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest recording kept: one hour of frames. Frames beyond are counted
/// but not stored, so a runaway sender cannot exhaust memory.
pub const MAX_FRAMES: usize = 3600 * 1000 / FRAME_MS as usize;

/// Encodes `samples` (padded with silence to whole frames) into frames.
/// Done before the call so the sending loop allocates nothing.
pub fn encode_frames(codec: &Codec, samples: &[i16]) -> Result<Vec<Vec<u8>>, CodecError> {
    let mut frames = Vec::new();
    let mut buf = [0u8; 2 * FRAME_SAMPLES];
    for chunk in samples.chunks(FRAME_SAMPLES) {
        let mut pcm = [0i16; FRAME_SAMPLES];
        pcm[..chunk.len()].copy_from_slice(chunk);
        let n = codec.encode_frame(&pcm, &mut buf)?;
        frames.push(buf[..n].to_vec());
    }
    Ok(frames)
}

/// What the receiver should hear for `samples`: each frame encoded and
/// decoded again (G.711 is lossy; this is exact for every codec).
pub fn expected_audio(codec: &Codec, samples: &[i16]) -> Result<Vec<i16>, CodecError> {
    let mut out = Vec::with_capacity(samples.len() + FRAME_SAMPLES);
    let mut pcm = [0i16; FRAME_SAMPLES];
    for f in encode_frames(codec, samples)? {
        let n = codec.decode_frame(&f, &mut pcm)?;
        out.extend_from_slice(&pcm[..n]);
    }
    Ok(out)
}

/// Received audio, placed by sequence number so loss leaves silence in the
/// right place and reordering is undone.
#[derive(Debug)]
pub struct Recording {
    codec: Codec,
    samples: Vec<i16>,
    have: Vec<bool>,
    /// When each frame arrived.
    pub arrivals: Vec<Option<Instant>>,
    /// Frames that arrived twice (should stay 0: transport replay checks).
    pub duplicates: u64,
    /// Frames that did not decode in the call's codec.
    pub undecodable: u64,
    /// Frames past [`MAX_FRAMES`].
    pub beyond_limit: u64,
}

impl Recording {
    /// An empty recording with room for `expected_frames` frames.
    pub fn new(codec: Codec, expected_frames: usize) -> Self {
        let n = expected_frames.min(MAX_FRAMES);
        Self {
            codec,
            samples: Vec::with_capacity(n * FRAME_SAMPLES),
            have: Vec::with_capacity(n),
            arrivals: Vec::with_capacity(n),
            duplicates: 0,
            undecodable: 0,
            beyond_limit: 0,
        }
    }

    /// Stores one received frame.
    pub fn on_frame(&mut self, f: &VoiceFrame<'_>, now: Instant) {
        let i = f.seq as usize;
        if i >= MAX_FRAMES {
            self.beyond_limit += 1;
            return;
        }
        if i >= self.have.len() {
            self.have.resize(i + 1, false);
            self.arrivals.resize(i + 1, None);
            self.samples.resize((i + 1) * FRAME_SAMPLES, 0);
        }
        if self.have[i] {
            self.duplicates += 1;
            return;
        }
        let slot = &mut self.samples[i * FRAME_SAMPLES..(i + 1) * FRAME_SAMPLES];
        match self.codec.decode_frame(f.payload, slot) {
            Ok(_) => {
                self.have[i] = true;
                self.arrivals[i] = Some(now);
            }
            Err(_) => self.undecodable += 1,
        }
    }

    /// Frames received.
    pub fn frames_received(&self) -> usize {
        self.have.iter().filter(|h| **h).count()
    }

    /// Whether frame `i` arrived.
    pub fn has(&self, i: usize) -> bool {
        self.have.get(i).copied().unwrap_or(false)
    }

    /// The audio, silence where frames were lost.
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }
}

/// How received audio compares to what was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Frames sent.
    pub sent: usize,
    /// Frames that arrived.
    pub received: usize,
    /// Frames that never arrived.
    pub lost: usize,
    /// Frames that arrived with different samples.
    pub corrupted: usize,
}

/// Compares a recording to the audio expected, frame by frame, sample for sample.
pub fn compare(expected: &[i16], rec: &Recording) -> Comparison {
    let sent = expected.len().div_ceil(FRAME_SAMPLES);
    let mut c = Comparison {
        sent,
        ..Comparison::default()
    };
    for i in 0..sent {
        if !rec.has(i) {
            c.lost += 1;
            continue;
        }
        c.received += 1;
        let want = &expected[i * FRAME_SAMPLES..((i + 1) * FRAME_SAMPLES).min(expected.len())];
        let got = &rec.samples()[i * FRAME_SAMPLES..i * FRAME_SAMPLES + want.len()];
        if want != got {
            c.corrupted += 1;
        }
    }
    c
}

/// Frames kept while the codec is not known yet: voice can arrive before
/// the application has seen the Answer event. Five seconds' worth.
const EARLY_FRAMES: usize = 250;

enum RecorderState {
    Early(Vec<(u32, Vec<u8>, Instant)>),
    Recording(Recording),
}

/// A [`Recording`] behind a lock, fed from a client's voice callback. Frames
/// that arrive before [`CallRecorder::start`] names the codec are held and
/// replayed into the recording then.
pub struct CallRecorder {
    state: std::sync::Mutex<RecorderState>,
}

impl CallRecorder {
    /// A recorder waiting for its codec.
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            state: std::sync::Mutex::new(RecorderState::Early(Vec::new())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The callback to hand to the client runtime.
    pub fn sink(self: &std::sync::Arc<Self>) -> crate::runtime::client::VoiceSink {
        let me = self.clone();
        Box::new(move |f| {
            let now = Instant::now();
            match &mut *me.lock() {
                RecorderState::Recording(r) => r.on_frame(f, now),
                RecorderState::Early(early) if early.len() < EARLY_FRAMES => {
                    early.push((f.seq, f.payload.to_vec(), now));
                }
                RecorderState::Early(_) => {}
            }
        })
    }

    /// Starts recording in `codec`, replaying frames that came early.
    pub fn start(&self, codec: Codec, expected_frames: usize, call: CallId) {
        let mut st = self.lock();
        let mut rec = Recording::new(codec, expected_frames);
        if let RecorderState::Early(early) = &*st {
            for (seq, payload, at) in early {
                let f = VoiceFrame {
                    call,
                    seq: *seq,
                    timestamp: 0,
                    payload,
                };
                rec.on_frame(&f, *at);
            }
        }
        *st = RecorderState::Recording(rec);
    }

    /// Runs `f` on the recording, if started.
    pub fn with<R>(&self, f: impl FnOnce(Option<&Recording>) -> R) -> R {
        match &*self.lock() {
            RecorderState::Recording(r) => f(Some(r)),
            RecorderState::Early(_) => f(None),
        }
    }
}

/// Sends `frames` on `call` at one frame per 20 ms until done or `stop` is
/// set. `on_sent(seq)` runs just before each frame leaves (for latency).
/// Returns the frames sent.
pub async fn play(
    rt: &ClientRuntime,
    call: CallId,
    frames: &[Vec<u8>],
    stop: &AtomicBool,
    mut on_sent: impl FnMut(u32),
) -> Result<usize, ClientError> {
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(FRAME_MS)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for (seq, f) in frames.iter().enumerate() {
        tick.tick().await;
        if stop.load(Ordering::Relaxed) {
            return Ok(seq);
        }
        let seq = seq as u32;
        on_sent(seq);
        rt.send_voice(call, seq, seq * FRAME_SAMPLES as u32, f)
            .await?;
    }
    Ok(frames.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_counts_loss_and_corruption() {
        let codec = Codec::Slin;
        let audio = crate::audio::test_signal(1, FRAME_SAMPLES * 4);
        let frames = encode_frames(&codec, &audio).unwrap();
        let expected = expected_audio(&codec, &audio).unwrap();
        assert_eq!(expected, audio, "slin is lossless");
        let mut rec = Recording::new(codec, 4);
        let now = Instant::now();
        for (seq, f) in frames.iter().enumerate() {
            let mut payload = f.clone();
            if seq == 1 {
                continue; // lost
            }
            if seq == 2 {
                payload[7] ^= 1; // corrupted
            }
            let vf = VoiceFrame {
                call: CallId(1),
                seq: seq as u32,
                timestamp: 0,
                payload: &payload,
            };
            rec.on_frame(&vf, now);
            if seq == 3 {
                rec.on_frame(&vf, now);
            }
        }
        let c = compare(&expected, &rec);
        assert_eq!(
            c,
            Comparison {
                sent: 4,
                received: 3,
                lost: 1,
                corrupted: 1
            }
        );
        assert_eq!(rec.duplicates, 1);
    }

    #[test]
    fn ulaw_expected_audio_is_what_decoding_gives() {
        let codec = Codec::Ulaw;
        let audio = crate::audio::test_signal(2, 500);
        let expected = expected_audio(&codec, &audio).unwrap();
        assert_eq!(expected.len(), 640, "padded to whole frames");
        assert_ne!(&expected[..500], &audio[..], "ulaw is lossy");
    }
}
