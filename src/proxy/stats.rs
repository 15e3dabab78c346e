//! What a proxy counts. Exported as metrics by the daemon.

use crate::wire::DropCounters;

/// Counters of one proxy core since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Dropped packets, per reason.
    pub drops: DropCounters,
    /// Datagrams handed to the core.
    pub packets_in: u64,
    /// Datagrams the core asked to send.
    pub packets_out: u64,
    /// Sessions established.
    pub handshakes_accepted: u64,
    /// Authenticated handshakes refused with an answer, for any reason
    /// (the sum of the four `refused_*` counters).
    pub handshakes_refused: u64,
    /// Refused: the client key is not in the subscriber store.
    pub refused_unknown_key: u64,
    /// Refused: the proxy holds as many sessions as it may.
    pub refused_busy: u64,
    /// Refused: the timestamp was outside the freshness window.
    pub refused_clock_skew: u64,
    /// Refused: the timestamp was not newer than the newest held for the key
    /// or the restart floor. (Replays of an initiation already seen or
    /// answered are dropped unanswered, counted as `stale_timestamp`.)
    pub refused_stale: u64,
    /// Cookie replies sent (under load).
    pub cookie_replies: u64,
    /// Sessions that ended because the client went silent.
    pub sessions_expired: u64,
    /// Times an authenticated packet moved a client's address (NAT rebinding).
    pub address_changes: u64,
    /// Registrations accepted (including refreshes).
    pub registrations: u64,
    /// Calls offered to at least one device.
    pub calls_started: u64,
    /// Calls answered.
    pub calls_answered: u64,
    /// Calls refused before answer (not found, busy, rejected, no answer).
    pub calls_failed: u64,
    /// Voice frames relayed from one client to another.
    pub media_relayed: u64,
    /// Control messages sent again because no ack came.
    pub control_retransmits: u64,
    /// Devices dropped from a call's offer because they neither rang nor
    /// sent anything within `leg_timeout`.
    pub fork_legs_dropped: u64,
    /// Answered calls ended because one side sent no media for
    /// `media_timeout`.
    pub media_timeouts: u64,
    /// Control messages given up on: sent [`MAX_TRANSMISSIONS`] times and
    /// never acknowledged.
    ///
    /// [`MAX_TRANSMISSIONS`]: crate::call::reliable::MAX_TRANSMISSIONS
    pub control_undelivered: u64,
    /// Control messages the proxy could not queue to a session: its queue of
    /// unacknowledged messages was full, or the message did not fit.
    pub control_not_queued: u64,
    /// Registrations refused (key not authorised for the name).
    pub registrations_refused: u64,
    /// Rejects and hangups from clients whose cause was no Q.850 value
    /// (0 or above 127), passed on as normal clearing (16) or interworking
    /// (127): [`Cause::from_code`](crate::call::Cause::from_code).
    pub causes_out_of_range: u64,
}
