//! A session's keys at this proxy: whole (ready to open and seal, in a send
//! epoch of its own), or compact, as replicated, for a replica not used yet
//! (spec 16.9). A replica is made whole on its first use (a packet from its
//! client, a frame or message to seal for it, a take-over or adoption), so
//! the many replicas no client uses here cost a few hundred bytes each and
//! no send epoch.

use crate::crypto::PublicKey;
use crate::session::{Epochs, EpochsExhausted, SessionCrypto, SessionState};

/// The keys of one session (one pointer wide either way).
#[derive(Debug)]
pub(crate) enum Keys {
    /// Imported: opens and seals.
    Whole(Box<SessionCrypto>),
    /// As replicated, with the highest client counter floor reported since.
    Compact(Box<SessionState>),
}

impl Keys {
    /// Whole keys.
    pub(crate) fn whole(c: SessionCrypto) -> Self {
        Self::Whole(Box::new(c))
    }

    /// Compact keys of a replica.
    pub(crate) fn compact(state: &SessionState) -> Self {
        Self::Compact(Box::new(state.clone()))
    }

    /// Whether imported already.
    pub(crate) fn is_whole(&self) -> bool {
        matches!(self, Self::Whole(_))
    }

    /// The keys, made whole first if compact (imported in a fresh send
    /// epoch, spec 8.7). Errors when the epoch lease has none left (the
    /// keys stay compact).
    pub(crate) fn get(&mut self, epochs: &Epochs) -> Result<&mut SessionCrypto, EpochsExhausted> {
        if let Self::Compact(state) = self {
            let c = SessionCrypto::import(state, epochs)?;
            *self = Self::whole(c);
        }
        match self {
            Self::Whole(c) => Ok(c),
            Self::Compact(_) => Err(EpochsExhausted),
        }
    }

    /// The keys if whole.
    pub(crate) fn whole_mut(&mut self) -> Option<&mut SessionCrypto> {
        match self {
            Self::Whole(c) => Some(c),
            Self::Compact(_) => None,
        }
    }

    /// Seals with whole keys; `None` if compact (a session served here is
    /// always whole) or as [`SessionCrypto::seal`].
    pub(crate) fn seal(
        &mut self,
        out: &mut [u8],
        write_inner: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<usize> {
        self.whole_mut()?.seal(out, write_inner)
    }

    /// The client's counter floor (see [`SessionCrypto::client_floor`]).
    pub(crate) fn client_floor(&self) -> u64 {
        match self {
            Self::Whole(c) => c.client_floor(),
            Self::Compact(s) => s.client_counter_floor,
        }
    }

    /// A newer record of the session arrived: compact keys take its state
    /// (with the higher client floor), whole keys raise their floor.
    pub(crate) fn update(&mut self, state: &SessionState) {
        match self {
            Self::Whole(c) => c.raise_client_floor(state.client_counter_floor),
            Self::Compact(s) => {
                let floor = s.client_counter_floor.max(state.client_counter_floor);
                **s = state.clone();
                s.client_counter_floor = floor;
            }
        }
    }

    /// The exportable state (the replicated one while compact).
    pub(crate) fn export(&self, client_key: PublicKey) -> SessionState {
        match self {
            Self::Whole(c) => c.export(client_key),
            Self::Compact(s) => (**s).clone(),
        }
    }
}
