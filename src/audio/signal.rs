//! Deterministic test signals and framing helpers for demos and tests.
//!
//! `test_signal` gives a sender and a receiver the same audio from nothing
//! but a seed, so the receiver can check what arrived by exact comparison:
//! a lost, corrupted, duplicated or reordered frame shows up as a mismatch.
//! Only integer arithmetic is used (no `f64::sin`, whose last bit may vary
//! between platforms' libm), so the samples are bit-identical everywhere.

use std::slice::ChunksExact;

use super::codec::{FRAME_SAMPLES, SAMPLE_RATE};

/// Peak amplitude of the tone: about -12 dBFS, loud enough to hear and
/// far enough from full scale that tone plus noise never clips.
const TONE_AMPLITUDE: i32 = 8192;
/// Right shift turning a 16-bit random value into noise of +-512 (about
/// -36 dBFS): quiet next to the tone, but it makes every frame unique.
const NOISE_SHIFT: u32 = 6;
/// Lowest tone frequency, in Hz: the bottom of the telephone band.
const TONE_MIN_HZ: u32 = 300;
/// Number of distinct tone frequencies, 1 Hz apart, so the tone stays in
/// 300..3300 Hz, inside the band every narrowband codec passes.
const TONE_SPAN_HZ: u32 = 3000;

/// Spreads nearby seeds far apart (a murmur3-style finaliser), so seeds 1 and
/// 2 get unrelated tones rather than 300 Hz and 301 Hz.
fn mix(seed: u32) -> u32 {
    let mut h = seed ^ 0x9E37_79B9;
    h = (h ^ (h >> 16)).wrapping_mul(0x85EB_CA6B);
    h = (h ^ (h >> 13)).wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// Sine of `phase` (a full turn is 2^32), approximated by the parabola
/// 4x(1-|x|) over each half turn: within 6% of full scale of a true sine,
/// exact at the peaks and zero crossings. Returns -32768..=32768.
fn parabolic_sine(phase: u32) -> i32 {
    let x = i32::from((phase >> 16) as u16 as i16); // -pi..pi as -32768..32767
    (4 * x * (32768 - x.abs())) >> 15
}

/// Returns `samples` samples (8000 Hz) of a tone whose frequency (300 to
/// 3299 Hz) is chosen by `seed`, plus low-level pseudo-random noise seeded
/// by `seed`. The same seed always gives the same samples; different seeds
/// give signals that differ in nearly every sample, and the noise makes
/// every frame of a signal distinct from every other.
pub fn test_signal(seed: u32, samples: usize) -> Vec<i16> {
    let freq = TONE_MIN_HZ + mix(seed) % TONE_SPAN_HZ;
    // Phase step per sample, as a fraction of a full turn in 32-bit fixed point.
    let step = ((u64::from(freq) << 32) / u64::from(SAMPLE_RATE)) as u32;
    // xorshift64 must not start at 0; seed in the high half and a constant
    // with a non-zero low half guarantee that, and distinct seeds stay distinct.
    let mut state = (u64::from(seed) << 32) ^ 0x2545_F491_4F6C_DD1D;
    let mut phase = 0u32;
    (0..samples)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = i32::from((state >> 48) as u16 as i16) >> NOISE_SHIFT;
            let tone = (parabolic_sine(phase) * TONE_AMPLITUDE) >> 15;
            phase = phase.wrapping_add(step);
            // At most 8192 + 512 in magnitude: always fits.
            (tone + noise) as i16
        })
        .collect()
}

/// Splits `samples` into whole frames of `FRAME_SAMPLES`. A trailing partial
/// frame is not yielded (a codec frame must be whole); it is available from
/// the iterator's `remainder()`, or call `pad_to_frames` first to keep it.
pub fn frames(samples: &[i16]) -> ChunksExact<'_, i16> {
    samples.chunks_exact(FRAME_SAMPLES)
}

/// Appends silence so `samples` holds a whole number of frames; a signal
/// that already does is left unchanged.
pub fn pad_to_frames(samples: &mut Vec<i16>) {
    let whole = samples.len().div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES;
    samples.resize(whole, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// Largest magnitude `test_signal` may produce.
    const PEAK: i32 = TONE_AMPLITUDE + (1 << (15 - NOISE_SHIFT));

    #[test]
    fn tone_frequency_follows_the_seed() {
        for seed in 0..20 {
            let want = TONE_MIN_HZ + mix(seed) % TONE_SPAN_HZ;
            // One second: a tone of f Hz crosses zero 2f times. The noise can
            // only shift a crossing by a sample, not add one, as the tone's
            // slope at a crossing exceeds the noise's spread.
            let s = test_signal(seed, SAMPLE_RATE as usize);
            let crossings = s.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count() as u32;
            assert!(
                crossings.abs_diff(2 * want) <= 2,
                "seed {seed}: {crossings} vs {want} Hz"
            );
        }
        // Neighbouring seeds get unrelated tones.
        assert!((mix(1) % TONE_SPAN_HZ).abs_diff(mix(2) % TONE_SPAN_HZ) > 10);
    }

    #[test]
    fn the_tone_is_loud_and_the_noise_is_quiet() {
        let s = test_signal(42, 8000);
        let peak = s.iter().map(|x| i32::from(*x).abs()).max().unwrap();
        assert!(peak > TONE_AMPLITUDE - 1000 && peak <= PEAK, "peak {peak}");
        // Subtracting the pure tone must leave only the +-512 noise.
        let freq = TONE_MIN_HZ + mix(42) % TONE_SPAN_HZ;
        let step = ((u64::from(freq) << 32) / u64::from(SAMPLE_RATE)) as u32;
        for (i, &x) in s.iter().enumerate() {
            let tone = (parabolic_sine(step.wrapping_mul(i as u32)) * TONE_AMPLITUDE) >> 15;
            assert!((i32::from(x) - tone).abs() <= 512, "sample {i}");
        }
    }

    #[test]
    fn output_is_pinned() {
        // Peers built from different versions must generate the same audio,
        // so any change to the generator has to be deliberate.
        for (seed, head, weighted_sum) in [
            (0, [509, 5353, -7786, 7994, -4347, -1726], 24_258_939),
            (1, [255, 4502, -7274, 7683, -6580, 3177], -254_384_542),
        ] {
            let s = test_signal(seed, 8000);
            assert_eq!(s[..6], head, "seed {seed}");
            let sum: i64 = (1..).zip(&s).map(|(i, &x)| i * i64::from(x)).sum();
            assert_eq!(sum, weighted_sum, "seed {seed}");
        }
    }

    #[test]
    fn parabola_hits_the_sine_landmarks() {
        assert_eq!(parabolic_sine(0), 0);
        assert_eq!(parabolic_sine(1 << 30), 32768);
        assert_eq!(parabolic_sine(1 << 31), 0);
        assert_eq!(parabolic_sine(3 << 30), -32768);
    }

    #[test]
    fn different_seeds_differ_in_nearly_every_sample() {
        let signals: Vec<Vec<i16>> = (0..32).map(|seed| test_signal(seed, 1600)).collect();
        for (a, sa) in signals.iter().enumerate() {
            for sb in &signals[a + 1..] {
                let same = sa.iter().zip(sb).filter(|(x, y)| x == y).count();
                assert!(same < 16, "seed {a}: {same} of 1600 samples equal");
            }
        }
    }

    #[test]
    fn every_frame_is_distinct_so_reordering_is_detectable() {
        // Ten seconds: 500 frames, none equal to another.
        let s = test_signal(7, 500 * FRAME_SAMPLES);
        let unique: HashSet<&[i16]> = frames(&s).collect();
        assert_eq!(unique.len(), 500);
    }

    #[test]
    fn frames_yields_whole_frames_only() {
        let s = test_signal(3, 2 * FRAME_SAMPLES + 80);
        let mut it = frames(&s);
        assert_eq!(it.len(), 2);
        assert_eq!(it.remainder(), &s[2 * FRAME_SAMPLES..]);
        assert_eq!(it.next(), Some(&s[..FRAME_SAMPLES]));
        assert_eq!(it.next(), Some(&s[FRAME_SAMPLES..2 * FRAME_SAMPLES]));
        assert_eq!(it.next(), None);
        assert_eq!(frames(&s[..100]).count(), 0);
    }

    #[test]
    fn pad_to_frames_appends_silence_only_when_needed() {
        let mut s = test_signal(5, 400);
        let orig = s.clone();
        pad_to_frames(&mut s);
        assert_eq!(s.len(), 480);
        assert_eq!(&s[..400], &orig[..]);
        assert!(s[400..].iter().all(|&x| x == 0));
        pad_to_frames(&mut s);
        assert_eq!(s.len(), 480);
        let mut empty = Vec::new();
        pad_to_frames(&mut empty);
        assert!(empty.is_empty());
    }

    proptest! {
        #[test]
        fn any_seed_is_deterministic_and_bounded(seed in any::<u32>(), len in 0usize..2000) {
            let s = test_signal(seed, len);
            prop_assert_eq!(s.len(), len);
            prop_assert!(s.iter().all(|&x| i32::from(x).abs() <= PEAK));
            // A longer signal from the same seed starts with the shorter one.
            prop_assert_eq!(&test_signal(seed, len + 160)[..len], &s[..]);
        }
    }
}
