//! Voice that overtakes its call's Answer (spec: client call states).
//!
//! When the callee is served by another proxy than the caller, its proxy
//! relays the callee's first voice frames straight to the caller while the
//! Answer crosses the peer link to the caller's proxy: the frames can come
//! first. The caller cannot open them before the Answer's end-to-end
//! handshake part, so it holds a few (transport-authenticated, still
//! end-to-end sealed) and plays them once the Answer is through.

use super::VoiceFrame;
use crate::session::CallId;
use std::collections::VecDeque;

/// Most voice frames held per dialing call: 200 ms of 20 ms frames, more
/// than the peer link's extra leg takes. Beyond, the oldest is dropped
/// (counted as [`crate::wire::DropReason::EarlyVoiceDropped`]).
pub const EARLY_VOICE_FRAMES: usize = 10;

/// End-to-end sealed voice blobs of one dialing call, oldest first.
#[derive(Debug, Default)]
pub(crate) struct EarlyVoice {
    blobs: VecDeque<Vec<u8>>,
}

impl EarlyVoice {
    /// Holds `blob`; returns whether the oldest held one was dropped for it.
    pub(crate) fn push(&mut self, blob: &[u8]) -> bool {
        let full = self.blobs.len() >= EARLY_VOICE_FRAMES;
        if full {
            self.blobs.pop_front();
        }
        self.blobs.push_back(blob.to_vec());
        full
    }

    /// How many frames are held.
    pub(crate) fn len(&self) -> usize {
        self.blobs.len()
    }

    /// The held blobs, oldest first.
    pub(crate) fn take(self) -> VecDeque<Vec<u8>> {
        self.blobs
    }
}

/// A voice frame that arrived before its call's Answer, opened once the
/// Answer came: handed out by [`super::Client::poll_held_voice`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldVoiceFrame {
    /// The call.
    pub call: CallId,
    /// Sender's frame sequence number.
    pub seq: u32,
    /// Sender's sample timestamp.
    pub timestamp: u32,
    /// Encoded audio in the call's codec.
    pub payload: Vec<u8>,
}

impl HeldVoiceFrame {
    /// The frame as [`super::Client::handle_datagram`] hands frames out.
    pub fn as_frame(&self) -> VoiceFrame<'_> {
        VoiceFrame {
            call: self.call,
            seq: self.seq,
            timestamp: self.timestamp,
            payload: &self.payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_the_bound_dropping_the_oldest() {
        let mut e = EarlyVoice::default();
        for i in 0..EARLY_VOICE_FRAMES as u8 {
            assert!(!e.push(&[i]));
        }
        assert!(e.push(&[99]));
        assert_eq!(e.len(), EARLY_VOICE_FRAMES);
        let held = e.take();
        assert_eq!(held.front(), Some(&vec![1u8]));
        assert_eq!(held.back(), Some(&vec![99u8]));
    }
}
