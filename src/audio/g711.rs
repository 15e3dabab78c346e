//! ITU-T G.711 companding: mu-law (North America, Japan) and A-law (Europe).
//!
//! Both laws squeeze a 16-bit linear sample into one byte with a piecewise
//! linear approximation of a logarithm: 8 segments ("exponent") of 16 steps
//! ("mantissa"), each segment twice as coarse as the one below it. The code
//! here follows the G.711 tables bit for bit, so any conforming peer decodes
//! what we encode to exactly the value the tables give.
//!
//! Zero codes: mu-law has two codes for silence, 0xFF (+0) and 0x7F (-0).
//! Both decode to 0, and 0 encodes to 0xFF, so `ulaw_encode(ulaw_decode(0x7F))`
//! is 0xFF: that is the only code that does not survive a decode/encode round
//! trip. A-law has no zero level (its smallest levels are +8 and -8), so all
//! 256 A-law codes survive. We do not apply the optional "zero code
//! suppression" that old T1 equipment did (0x00 sent as 0x02): G.711 does not
//! require it and it would make 0x00 unreachable.

/// Added to the mu-law magnitude so that every segment boundary falls on a
/// power of two, which turns finding the segment into finding the top bit.
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude mu-law can represent once the bias is added (0x7FFF).
const ULAW_CLIP: i32 = 0x7FFF - ULAW_BIAS;

/// Encodes one 16-bit linear sample as a mu-law byte.
pub fn ulaw_encode(s: i16) -> u8 {
    let s = i32::from(s);
    // Sign-magnitude; widening first so -32768 does not overflow.
    let (sign, magnitude) = if s < 0 { (0x80, -s) } else { (0x00, s) };
    let biased = magnitude.min(ULAW_CLIP) + ULAW_BIAS;
    // biased >> 7 is in 1..=255; its top bit index is the segment.
    let exponent = 31 - (biased >> 7).leading_zeros() as i32;
    let mantissa = (biased >> (exponent + 3)) & 0x0F;
    // G.711 transmits mu-law codes inverted (mostly ones on an idle line).
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Decodes one mu-law byte to a 16-bit linear sample.
pub fn ulaw_decode(b: u8) -> i16 {
    let b = !b;
    let exponent = (b >> 4) & 0x07;
    let mantissa = i32::from(b & 0x0F);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    // Fits: the largest magnitude is 32124.
    (if b & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// Bit pattern G.711 XORs onto A-law codes (every even bit inverted) so an
/// idle line still has enough transitions for clock recovery.
const ALAW_XOR: u8 = 0x55;

/// Encodes one 16-bit linear sample as an A-law byte.
pub fn alaw_encode(s: i16) -> u8 {
    // A-law works on 13 bits. For negative input, NOT (rather than negate)
    // maps -1..=-8 onto the same level as 0..=7, which is what makes A-law
    // symmetric with no zero level.
    let (sign, magnitude) = if s >= 0 {
        (0x80, s >> 3)
    } else {
        (0x00, !s >> 3)
    };
    // magnitude is 0..=4095; segments 0 and 1 share step size 2, after which
    // each segment doubles, so segment = top bit index - 4 (clamped at 0).
    let top_bit = 15 - (magnitude | 1).leading_zeros() as i16;
    let segment = (top_bit - 4).max(0);
    let shift = if segment == 0 { 1 } else { segment };
    let mantissa = (magnitude >> shift) & 0x0F;
    ((sign | (segment << 4) | mantissa) as u8) ^ ALAW_XOR
}

/// Decodes one A-law byte to a 16-bit linear sample.
pub fn alaw_decode(b: u8) -> i16 {
    let b = b ^ ALAW_XOR;
    let segment = (b >> 4) & 0x07;
    let mantissa = i16::from(b & 0x0F);
    // Reconstruct the middle of the quantisation step, in 16-bit units.
    let magnitude = match segment {
        0 => (mantissa << 4) + 8,
        s => ((mantissa << 4) + 0x108) << (s - 1),
    };
    if b & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }
}

/// Panics with a uniform message when an output slice is too short; a short
/// buffer is a programming error at this layer (see `codec` for checked use).
fn check_len(input: usize, output: usize) {
    assert!(
        output >= input,
        "G.711 output buffer too small: {output} slots for {input} samples"
    );
}

/// Encodes `pcm` as mu-law into the front of `out`; returns `pcm.len()`.
///
/// # Panics
/// If `out` is shorter than `pcm`.
pub fn ulaw_encode_slice(pcm: &[i16], out: &mut [u8]) -> usize {
    check_len(pcm.len(), out.len());
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = ulaw_encode(s);
    }
    pcm.len()
}

/// Decodes mu-law `data` into the front of `out`; returns `data.len()`.
///
/// # Panics
/// If `out` is shorter than `data`.
pub fn ulaw_decode_slice(data: &[u8], out: &mut [i16]) -> usize {
    check_len(data.len(), out.len());
    for (o, &b) in out.iter_mut().zip(data) {
        *o = ulaw_decode(b);
    }
    data.len()
}

/// Encodes `pcm` as A-law into the front of `out`; returns `pcm.len()`.
///
/// # Panics
/// If `out` is shorter than `pcm`.
pub fn alaw_encode_slice(pcm: &[i16], out: &mut [u8]) -> usize {
    check_len(pcm.len(), out.len());
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = alaw_encode(s);
    }
    pcm.len()
}

/// Decodes A-law `data` into the front of `out`; returns `data.len()`.
///
/// # Panics
/// If `out` is shorter than `data`.
pub fn alaw_decode_slice(data: &[u8], out: &mut [i16]) -> usize {
    check_len(data.len(), out.len());
    for (o, &b) in out.iter_mut().zip(data) {
        *o = alaw_decode(b);
    }
    data.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G.711 decode levels written straight from the standard's tables
    /// (segment end points and step sizes), independent of the bit tricks
    /// above: mu-law in 14-bit units, A-law in 13-bit units.
    fn ulaw_table(code: u8) -> i16 {
        let c = !code;
        let (seg, m) = (i32::from((c >> 4) & 7), i32::from(c & 0x0F));
        let mag = (((2 * m + 33) << seg) - 33) * 4;
        (if c & 0x80 != 0 { -mag } else { mag }) as i16
    }

    fn alaw_table(code: u8) -> i16 {
        let c = code ^ 0x55;
        let (seg, m) = (i32::from((c >> 4) & 7), i32::from(c & 0x0F));
        let mag = if seg == 0 {
            2 * m + 1
        } else {
            (2 * m + 33) << (seg - 1)
        } * 8;
        (if c & 0x80 != 0 { mag } else { -mag }) as i16
    }

    #[test]
    fn reference_values() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-1), 0x7F);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x7E), -8);

        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
    }

    #[test]
    fn decode_matches_g711_tables() {
        for code in 0..=255u8 {
            assert_eq!(ulaw_decode(code), ulaw_table(code), "ulaw {code:#04x}");
            assert_eq!(alaw_decode(code), alaw_table(code), "alaw {code:#04x}");
        }
    }

    #[test]
    fn codes_survive_decode_encode() {
        for code in 0..=255u8 {
            // 0x7F is mu-law's "-0"; it canonicalises to 0xFF (see module docs).
            let want = if code == 0x7F { 0xFF } else { code };
            assert_eq!(ulaw_encode(ulaw_decode(code)), want, "ulaw {code:#04x}");
            assert_eq!(alaw_encode(alaw_decode(code)), code, "alaw {code:#04x}");
        }
    }

    #[test]
    fn decode_is_monotonic_within_each_sign() {
        // mu-law: 0x00..=0x7F climb from -32124 to 0, 0x80..=0xFF fall from
        // 32124 to 0. A-law: the same after undoing the even-bit inversion,
        // except the magnitude grows with the code on both sides.
        for c in 0x00..0x7Fu8 {
            assert!(ulaw_decode(c) < ulaw_decode(c + 1), "ulaw {c:#04x}");
            assert!(ulaw_decode(c | 0x80) > ulaw_decode((c + 1) | 0x80));
            let (a, b) = (c ^ 0x55, (c + 1) ^ 0x55);
            assert!(alaw_decode(a) > alaw_decode(b), "alaw neg {c:#04x}");
            assert!(alaw_decode(a ^ 0x80) < alaw_decode(b ^ 0x80));
        }
    }

    /// Half the quantisation step of the segment `code` lies in: the largest
    /// error G.711 allows for an input inside the representable range.
    fn half_step(code: u8, ulaw: bool) -> i32 {
        if ulaw {
            4 << ((!code >> 4) & 7)
        } else {
            let seg = i32::from(((code ^ 0x55) >> 4) & 7);
            4 << seg.max(1)
        }
    }

    #[test]
    fn every_sample_quantises_to_a_neighbouring_level() {
        let mut prev = (i16::MIN, i16::MIN);
        for x in i16::MIN..=i16::MAX {
            let (u, a) = (ulaw_encode(x), alaw_encode(x));
            let (du, da) = (ulaw_decode(u), alaw_decode(a));
            // Quantisation never reverses the order of two inputs.
            assert!(du >= prev.0 && da >= prev.1, "not monotonic at {x}");
            prev = (du, da);
            // Inside the range (no clipping) the error is at most half a step.
            if x.unsigned_abs() <= 32124 {
                let err = (i32::from(x) - i32::from(du)).abs();
                assert!(err <= half_step(u, true), "ulaw {x} -> {du}");
            }
            if x.unsigned_abs() <= 32256 {
                let err = (i32::from(x) - i32::from(da)).abs();
                assert!(err <= half_step(a, false), "alaw {x} -> {da}");
            }
        }
    }

    #[test]
    fn slice_versions_match_per_sample_and_leave_the_tail_alone() {
        let pcm: Vec<i16> = (-20..20).map(|i| i * 811).collect();
        let mut enc = [0xEEu8; 48];
        let mut dec = [0x7777i16; 48];

        assert_eq!(ulaw_encode_slice(&pcm, &mut enc), 40);
        assert!(enc[..40]
            .iter()
            .zip(&pcm)
            .all(|(&b, &s)| b == ulaw_encode(s)));
        assert_eq!(ulaw_decode_slice(&enc[..40], &mut dec), 40);
        assert!(dec[..40]
            .iter()
            .zip(&enc)
            .all(|(&s, &b)| s == ulaw_decode(b)));

        assert_eq!(alaw_encode_slice(&pcm, &mut enc), 40);
        assert!(enc[..40]
            .iter()
            .zip(&pcm)
            .all(|(&b, &s)| b == alaw_encode(s)));
        assert_eq!(alaw_decode_slice(&enc[..40], &mut dec), 40);
        assert!(dec[..40]
            .iter()
            .zip(&enc)
            .all(|(&s, &b)| s == alaw_decode(b)));

        assert!(enc[40..].iter().all(|&b| b == 0xEE));
        assert!(dec[40..].iter().all(|&s| s == 0x7777));
    }

    #[test]
    #[should_panic(expected = "output buffer too small")]
    fn short_output_slice_panics() {
        ulaw_encode_slice(&[0; 4], &mut [0; 3]);
    }
}
