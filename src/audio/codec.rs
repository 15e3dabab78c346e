//! Codec names, framing and frame-level encode/decode for the narrowband
//! codecs clients offer and answer with. (Proxies never touch audio: it is
//! end-to-end encrypted.)
//!
//! Everything is 8000 Hz mono in 20 ms frames of 160 samples, the common
//! telephony packetisation (RTP's default ptime for G.711).
//!
//! Wire formats per 20 ms frame:
//! - `ulaw`, `alaw`: 160 bytes of G.711, one byte per sample.
//! - `slin`: 320 bytes of 16-bit signed linear PCM, **big-endian** (network
//!   byte order), as RTP L16 (RFC 3551) and Asterisk's `slin` over RTP carry
//!   it. Little-endian hosts must swap, which `encode_frame` and
//!   `decode_frame` do.

use std::fmt;

use thiserror::Error;

use super::g711;

/// Sample rate of every codec here, in Hz.
pub const SAMPLE_RATE: u32 = 8000;
/// Duration of one frame, in milliseconds.
pub const FRAME_MS: u32 = 20;
/// Samples in one frame (`SAMPLE_RATE * FRAME_MS / 1000`).
pub const FRAME_SAMPLES: usize = 160;

// Keep the three constants from drifting apart if one is ever edited.
const _: () = assert!(FRAME_SAMPLES == (SAMPLE_RATE * FRAME_MS / 1000) as usize);

/// An audio codec, identified by its Asterisk-style name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 mu-law (`ulaw`, RTP PCMU).
    Ulaw,
    /// G.711 A-law (`alaw`, RTP PCMA).
    Alaw,
    /// 16-bit signed linear PCM, big-endian on the wire (`slin`, RTP L16).
    Slin,
    /// Any other codec, by name: it can be negotiated and relayed untouched,
    /// but not encoded or decoded here.
    Other(String),
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// The codec has no encoder/decoder here (only `Other` codecs).
    #[error("codec '{0}' cannot be encoded or decoded here (supported: ulaw, alaw, slin)")]
    Unsupported(String),
    /// The PCM given to `encode_frame` is not exactly one frame.
    #[error("{codec}: got {got} samples to encode, a {FRAME_MS} ms frame is {FRAME_SAMPLES}")]
    WrongSampleCount {
        /// Codec being encoded.
        codec: &'static str,
        /// Samples supplied.
        got: usize,
    },
    /// The data given to `decode_frame` is not exactly one frame.
    #[error("{codec}: got {got} bytes to decode, a {FRAME_MS} ms frame is {expected}")]
    WrongByteCount {
        /// Codec being decoded.
        codec: &'static str,
        /// Bytes supplied.
        got: usize,
        /// Bytes in one frame of this codec.
        expected: usize,
    },
    /// The caller's output buffer cannot hold one frame.
    #[error("{codec}: output buffer holds {got} {unit}, a frame needs {needed}")]
    OutputTooSmall {
        /// Codec being encoded or decoded.
        codec: &'static str,
        /// Capacity of the buffer supplied.
        got: usize,
        /// Capacity one frame needs.
        needed: usize,
        /// What the buffer counts: "bytes" or "samples".
        unit: &'static str,
    },
}

impl Codec {
    /// The codec's name: "ulaw", "alaw", "slin", or the `Other` name as given.
    pub fn name(&self) -> &str {
        match self {
            Codec::Ulaw => "ulaw",
            Codec::Alaw => "alaw",
            Codec::Slin => "slin",
            Codec::Other(name) => name,
        }
    }

    /// Parses a name; the three known names match case-insensitively, any
    /// other name becomes `Other` with its spelling kept.
    pub fn from_name(name: &str) -> Codec {
        [Codec::Ulaw, Codec::Alaw, Codec::Slin]
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
            .unwrap_or_else(|| Codec::Other(name.to_owned()))
    }

    /// Bytes in one 20 ms frame on the wire, or `None` for `Other` codecs,
    /// whose framing we do not know.
    pub fn frame_bytes(&self) -> Option<usize> {
        match self {
            Codec::Ulaw | Codec::Alaw => Some(FRAME_SAMPLES),
            Codec::Slin => Some(FRAME_SAMPLES * 2),
            Codec::Other(_) => None,
        }
    }

    /// Parses a list of codec names that this implementation must be able
    /// to encode and decode (what a client may offer or accept): the first
    /// name it cannot carry is an error that names what it can.
    pub fn parse_supported(names: &[String]) -> Result<Vec<Codec>, CodecError> {
        if names.is_empty() {
            return Err(CodecError::Unsupported(String::new()));
        }
        names
            .iter()
            .map(|n| {
                let c = Codec::from_name(n);
                c.known_name()?;
                Ok(c)
            })
            .collect()
    }

    /// The `&'static` name errors carry, or `Unsupported` for `Other`.
    fn known_name(&self) -> Result<&'static str, CodecError> {
        match self {
            Codec::Ulaw => Ok("ulaw"),
            Codec::Alaw => Ok("alaw"),
            Codec::Slin => Ok("slin"),
            Codec::Other(name) => Err(CodecError::Unsupported(name.clone())),
        }
    }

    /// Encodes exactly one frame (`FRAME_SAMPLES` samples) of `pcm` into the
    /// front of `out`, which may be longer than a frame; returns the number
    /// of bytes written (`frame_bytes()`).
    pub fn encode_frame(&self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
        let codec = self.known_name()?;
        if pcm.len() != FRAME_SAMPLES {
            return Err(CodecError::WrongSampleCount {
                codec,
                got: pcm.len(),
            });
        }
        let needed = self.frame_bytes().unwrap_or_default();
        if out.len() < needed {
            return Err(CodecError::OutputTooSmall {
                codec,
                got: out.len(),
                needed,
                unit: "bytes",
            });
        }
        Ok(match self {
            Codec::Ulaw => g711::ulaw_encode_slice(pcm, out),
            Codec::Alaw => g711::alaw_encode_slice(pcm, out),
            // Slin; `Other` was refused by `known_name` above.
            _ => {
                for (o, s) in out.chunks_exact_mut(2).zip(pcm) {
                    o.copy_from_slice(&s.to_be_bytes());
                }
                needed
            }
        })
    }

    /// Decodes exactly one frame (`frame_bytes()` bytes) of `data` into the
    /// front of `out`, which may be longer than a frame; returns the number
    /// of samples written (`FRAME_SAMPLES`).
    pub fn decode_frame(&self, data: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
        let codec = self.known_name()?;
        let expected = self.frame_bytes().unwrap_or_default();
        if data.len() != expected {
            return Err(CodecError::WrongByteCount {
                codec,
                got: data.len(),
                expected,
            });
        }
        if out.len() < FRAME_SAMPLES {
            return Err(CodecError::OutputTooSmall {
                codec,
                got: out.len(),
                needed: FRAME_SAMPLES,
                unit: "samples",
            });
        }
        Ok(match self {
            Codec::Ulaw => g711::ulaw_decode_slice(data, out),
            Codec::Alaw => g711::alaw_decode_slice(data, out),
            // Slin; `Other` was refused by `known_name` above.
            _ => {
                for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                    *o = i16::from_be_bytes([b[0], b[1]]);
                }
                FRAME_SAMPLES
            }
        })
    }

    /// Whether two codecs are the same one. `Other` names compare
    /// case-insensitively because SDP encoding names are case-insensitive
    /// (RFC 4566), so "OPUS" and "opus" must negotiate.
    fn same_as(&self, other: &Codec) -> bool {
        match (self, other) {
            (Codec::Other(a), Codec::Other(b)) => a.eq_ignore_ascii_case(b),
            _ => self == other,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Picks the codec for a call: the first codec in the offerer's preference
/// order that the answerer supports (`Other` codecs match by name, ignoring
/// ASCII case), returned as the offer spelled it; `None` if there is none.
pub fn negotiate(offer: &[Codec], supported: &[Codec]) -> Option<Codec> {
    offer
        .iter()
        .find(|o| supported.iter().any(|s| s.same_as(o)))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KNOWN: [Codec; 3] = [Codec::Ulaw, Codec::Alaw, Codec::Slin];

    fn other(name: &str) -> Codec {
        Codec::Other(name.to_owned())
    }

    #[test]
    fn names_round_trip_and_ignore_case_for_known_codecs() {
        for c in KNOWN {
            assert_eq!(Codec::from_name(c.name()), c);
            assert_eq!(Codec::from_name(&c.name().to_uppercase()), c);
        }
        assert_eq!(Codec::from_name("uLaw"), Codec::Ulaw);
        assert_eq!(Codec::from_name("G722"), other("G722"));
        assert_eq!(other("G722").name(), "G722");
        assert_eq!(Codec::Slin.to_string(), "slin");
        // Close but not equal names are not silently taken as known ones.
        assert_eq!(Codec::from_name("ulaw "), other("ulaw "));
        assert_eq!(Codec::from_name("slin16"), other("slin16"));
    }

    #[test]
    fn frame_sizes() {
        assert_eq!(Codec::Ulaw.frame_bytes(), Some(160));
        assert_eq!(Codec::Alaw.frame_bytes(), Some(160));
        assert_eq!(Codec::Slin.frame_bytes(), Some(320));
        assert_eq!(other("opus").frame_bytes(), None);
    }

    #[test]
    fn slin_is_big_endian_on_the_wire() {
        let mut pcm = [0i16; FRAME_SAMPLES];
        pcm[0] = 0x0102;
        pcm[1] = -2; // 0xFFFE
        let mut wire = [0u8; 320];
        assert_eq!(Codec::Slin.encode_frame(&pcm, &mut wire), Ok(320));
        assert_eq!(wire[..4], [0x01, 0x02, 0xFF, 0xFE]);
        let mut back = [0i16; FRAME_SAMPLES];
        assert_eq!(Codec::Slin.decode_frame(&wire, &mut back), Ok(160));
        assert_eq!(back, pcm);
    }

    #[test]
    fn g711_frames_use_the_g711_module() {
        let pcm: Vec<i16> = (0..160).map(|i| (i * 397 - 30_000) as i16).collect();
        let (mut wire, mut back) = ([0u8; 160], [0i16; 160]);
        assert_eq!(Codec::Ulaw.encode_frame(&pcm, &mut wire), Ok(160));
        assert_eq!(wire[0], g711::ulaw_encode(pcm[0]));
        assert_eq!(Codec::Ulaw.decode_frame(&wire, &mut back), Ok(160));
        assert_eq!(back[159], g711::ulaw_decode(wire[159]));
        assert_eq!(Codec::Alaw.encode_frame(&pcm, &mut wire), Ok(160));
        assert_eq!(wire[7], g711::alaw_encode(pcm[7]));
        assert_eq!(Codec::Alaw.decode_frame(&wire, &mut back), Ok(160));
        assert_eq!(back[80], g711::alaw_decode(wire[80]));
    }

    #[test]
    fn other_codecs_are_refused_by_name() {
        let opus = other("opus");
        let want = CodecError::Unsupported("opus".into());
        assert_eq!(
            opus.encode_frame(&[0; 160], &mut [0; 400]),
            Err(want.clone())
        );
        assert_eq!(
            opus.decode_frame(&[0; 160], &mut [0; 160]),
            Err(want.clone())
        );
        assert_eq!(
            want.to_string(),
            "codec 'opus' cannot be encoded or decoded here (supported: ulaw, alaw, slin)"
        );
    }

    #[test]
    fn wrong_lengths_are_refused_with_context() {
        let err = Codec::Ulaw
            .encode_frame(&[0; 159], &mut [0; 160])
            .unwrap_err();
        assert_eq!(
            err,
            CodecError::WrongSampleCount {
                codec: "ulaw",
                got: 159
            }
        );
        assert_eq!(
            err.to_string(),
            "ulaw: got 159 samples to encode, a 20 ms frame is 160"
        );

        let err = Codec::Slin
            .decode_frame(&[0; 319], &mut [0; 160])
            .unwrap_err();
        let want = CodecError::WrongByteCount {
            codec: "slin",
            got: 319,
            expected: 320,
        };
        assert_eq!(err, want);
        assert_eq!(
            err.to_string(),
            "slin: got 319 bytes to decode, a 20 ms frame is 320"
        );

        let err = Codec::Slin
            .encode_frame(&[0; 160], &mut [0; 160])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "slin: output buffer holds 160 bytes, a frame needs 320"
        );
        let err = Codec::Alaw
            .decode_frame(&[0; 160], &mut [0; 100])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "alaw: output buffer holds 100 samples, a frame needs 160"
        );
    }

    #[test]
    fn negotiate_follows_offer_order() {
        let supported = [Codec::Slin, Codec::Alaw, Codec::Ulaw];
        let offer = [other("opus"), Codec::Ulaw, Codec::Alaw];
        assert_eq!(negotiate(&offer, &supported), Some(Codec::Ulaw));
        assert_eq!(negotiate(&[other("opus")], &supported), None);
        assert_eq!(negotiate(&[], &supported), None);
        assert_eq!(negotiate(&offer, &[]), None);
        // Other codecs match by name, ignoring case, and keep the offer's spelling.
        let supported = [other("opus"), Codec::Alaw];
        let offer = [other("g722"), other("OPUS"), Codec::Alaw];
        assert_eq!(negotiate(&offer, &supported), Some(other("OPUS")));
    }

    proptest! {
        #[test]
        fn slin_round_trips_exactly(pcm in prop::collection::vec(any::<i16>(), 160)) {
            let (mut wire, mut back) = ([0u8; 320], [0i16; 160]);
            Codec::Slin.encode_frame(&pcm, &mut wire).unwrap();
            Codec::Slin.decode_frame(&wire, &mut back).unwrap();
            prop_assert_eq!(&back[..], &pcm[..]);
        }

        #[test]
        fn g711_reencoding_is_stable(pcm in prop::collection::vec(any::<i16>(), 160)) {
            // Decoding then re-encoding a G.711 frame must give the same
            // bytes, or every decode/encode step (a recording
            // played back, a gateway) would add noise.
            for codec in [Codec::Ulaw, Codec::Alaw] {
                let (mut wire, mut back, mut again) = ([0u8; 160], [0i16; 160], [0u8; 160]);
                codec.encode_frame(&pcm, &mut wire).unwrap();
                codec.decode_frame(&wire, &mut back).unwrap();
                codec.encode_frame(&back, &mut again).unwrap();
                // Except mu-law's "-0" (0x7F), which comes back as +0 (0xFF).
                if codec == Codec::Ulaw {
                    wire.iter_mut().filter(|b| **b == 0x7F).for_each(|b| *b = 0xFF);
                }
                prop_assert_eq!(wire, again);
            }
        }
    }
}
