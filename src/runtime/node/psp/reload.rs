//! A new peer list for a running node (`Node::set_peers`; docs/anypsp-link.md
//! 3.2, docs/anypsp-protocol.md 17.2 "Membership").

use super::{Ctx, Psp};
use crate::runtime::node::NodeError;
use crate::runtime::peers::{MembershipChange, Peers};
use crate::session::ProxyId;
use crate::sync::members::{self, Membership};
use std::collections::BTreeMap;
use std::time::Instant;

impl Psp {
    /// Applies a new peer list (Node::set_peers): the link shell closes
    /// and refuses the peers that left or were revoked and dials the new
    /// ones; the engine and the core follow. A peer gone for good has its
    /// clients adopted at once (its link is closed on purpose: no detect
    /// time to wait for).
    pub(super) fn reload(
        &mut self,
        ctx: &Ctx,
        shell: &mut Peers,
        peers: Vec<members::Member>,
    ) -> Result<MembershipChange, NodeError> {
        let members = Membership::new(self.local.clone(), peers.clone())?;
        let change = shell.set_membership(members)?;
        let active: BTreeMap<ProxyId, std::net::SocketAddr> = peers
            .iter()
            .filter(|m| !m.revoked)
            .map(|m| (m.node, m.address))
            .collect();
        for id in &change.removed {
            self.rep.engine_mut().remove_peer(id.get());
            self.configured.remove(id);
            self.addrs.remove(id);
            self.up.remove(id);
            self.down_since.remove(id);
            self.heard.remove(id);
        }
        for id in &change.added {
            if let Err(e) = self.rep.add_peer(id.get()) {
                log::error!("anypsp: peer {id} not added to the sync engine: {e:?}");
                continue;
            }
            self.configured.insert(*id);
            self.addrs.insert(*id, active[id]);
        }
        let gone: Vec<ProxyId> = change
            .removed
            .iter()
            .filter(|id| !active.contains_key(id))
            .copied()
            .collect();
        let configured = self.configured.clone();
        // Down first, while they are still peers: `peer_down` marks only
        // a peer as down, and a gone owner of forked calls must pass its
        // decisions to a successor (spec 15.4), not keep them.
        let adopted = ctx.core.with_core(|p| {
            let adopted = gone
                .iter()
                .map(|id| p.peer_down(Instant::now(), *id))
                .sum::<usize>();
            p.set_peers(configured.iter().copied());
            adopted
        });
        log::info!(
            "anypsp: peers reloaded: added {:?}, removed {:?} ({adopted} client(s) adopted), {} configured",
            change.added.iter().map(|p| p.get()).collect::<Vec<_>>(),
            change.removed.iter().map(|p| p.get()).collect::<Vec<_>>(),
            self.configured.len()
        );
        // The board at once: /status names the new peer set.
        self.next_board = Instant::now();
        Ok(change)
    }
}
