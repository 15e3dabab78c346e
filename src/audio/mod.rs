//! Audio for the proxy and its demos: narrowband telephony audio, always
//! 8000 Hz mono 16-bit, carried in 20 ms frames of 160 samples.
//!
//! - [`g711`]: sample-level mu-law and A-law companding (ITU-T G.711).
//! - [`codec`]: codec names, negotiation and frame encode/decode for
//!   `ulaw`, `alaw` and `slin` (big-endian 16-bit PCM on the wire).
//! - [`wav`]: reading and writing 8000 Hz mono 16-bit WAV files.
//! - [`signal`]: seeded, bit-exact test signals and framing helpers, so a
//!   receiver can verify audio by exact comparison.

pub mod codec;
pub mod g711;
pub mod signal;
#[cfg(feature = "daemon")]
pub mod wav;

pub use codec::{negotiate, Codec, CodecError, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE};
pub use g711::{
    alaw_decode, alaw_decode_slice, alaw_encode, alaw_encode_slice, ulaw_decode, ulaw_decode_slice,
    ulaw_encode, ulaw_encode_slice,
};
pub use signal::{frames, pad_to_frames, test_signal};
#[cfg(feature = "daemon")]
pub use wav::{read_wav, write_wav, WavError, WavFormat};
