//! The peer link's channel demux (docs/anypsp-link.md 7.2.1) on arbitrary
//! bytes: never panics; a message it accepts re-wraps to the same bytes; it
//! refuses only the empty message and unknown channel bytes.
#![no_main]
use anytun::runtime::node::mux::{self, MuxError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match mux::split(data) {
        Ok((c, body)) => assert_eq!(mux::wrap(c, body), data),
        Err(MuxError::Empty) => assert!(data.is_empty()),
        Err(MuxError::Unknown(b)) => {
            assert_eq!(Some(&b), data.first());
            assert!(b != mux::CHANNEL_SYNC && b != mux::CHANNEL_PROXY);
        }
    }
});
