//! Channels of the peer link (docs/anypsp-link.md section 7.2.1): every
//! link message starts with one byte saying which layer it is for, so the
//! sync engine and the proxy's peer messages share one encrypted link.

/// Channel of the sync engine's messages (docs/anypsp-protocol.md 5).
pub const CHANNEL_SYNC: u8 = 0x01;
/// Channel of the proxy's peer messages: `Control`, `Forward`, `Media`
/// (docs/anypsp-protocol.md 15.5).
pub const CHANNEL_PROXY: u8 = 0x02;

/// The layer a link message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// [`CHANNEL_SYNC`].
    Sync,
    /// [`CHANNEL_PROXY`].
    Proxy,
}

impl Channel {
    /// The channel byte.
    pub fn byte(self) -> u8 {
        match self {
            Self::Sync => CHANNEL_SYNC,
            Self::Proxy => CHANNEL_PROXY,
        }
    }
}

/// Why a link message was dropped before any layer saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    /// An empty message: no channel byte.
    #[error("empty link message")]
    Empty,
    /// A channel this version does not know (counted and dropped, so a
    /// later version may add channels that older nodes ignore).
    #[error("unknown link channel {0:#04x}")]
    Unknown(u8),
}

/// `bytes` prefixed with the channel byte, ready for the link.
pub fn wrap(channel: Channel, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.push(channel.byte());
    v.extend_from_slice(bytes);
    v
}

/// The channel of a link message and its body.
pub fn split(msg: &[u8]) -> Result<(Channel, &[u8]), MuxError> {
    let (&c, body) = msg.split_first().ok_or(MuxError::Empty)?;
    let channel = match c {
        CHANNEL_SYNC => Channel::Sync,
        CHANNEL_PROXY => Channel::Proxy,
        other => return Err(MuxError::Unknown(other)),
    };
    Ok((channel, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip_and_unknown_ones_are_refused() {
        for c in [Channel::Sync, Channel::Proxy] {
            let m = wrap(c, b"abc");
            assert_eq!(split(&m), Ok((c, &b"abc"[..])));
        }
        assert_eq!(
            split(&wrap(Channel::Sync, b"")),
            Ok((Channel::Sync, &b""[..]))
        );
        assert_eq!(split(&[]), Err(MuxError::Empty));
        assert_eq!(split(&[0, 1]), Err(MuxError::Unknown(0)));
        assert_eq!(split(&[0x7f]), Err(MuxError::Unknown(0x7f)));
    }
}
