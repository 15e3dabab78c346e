//! The resync pass of the node's main task: listed in chunks under short
//! holds of the core lock, then swept (docs/anypsp-protocol.md 17.2).

use super::{Ctx, Local, Psp};
use crate::proxy::ServedCursor;
use crate::runtime::node::unix_ms;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

impl Psp {
    /// Starts a resync pass (events were lost, or the engine reset a
    /// table): everything this proxy serves is written again, in chunks
    /// ([`Self::resync_chunk`]). A pass under way starts over: what was
    /// lost may lie behind its cursor. The local changes already queued
    /// when the pass starts are older than every chunk, so they are taken
    /// in first; a change made later reaches the engine after the chunk
    /// that listed its entry, and so wins (docs/anypsp-protocol.md 17).
    pub(super) fn start_resync(&mut self, ctx: &Ctx, locals: &mut mpsc::Receiver<Local>) {
        ctx.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        // The after-lock hook queues events only under the core lock: what
        // is queued now is all that was emitted before this pass.
        let older = ctx.core.with_core(|p| {
            p.clear_resync();
            locals.len()
        });
        let now = unix_ms();
        for _ in 0..older {
            match locals.try_recv() {
                Ok(l) => self.on_local(now, l),
                Err(_) => break,
            }
        }
        if self.resync_at.is_some() || self.rep.resyncing() {
            log::info!("anypsp: resync starts over (more events were lost)");
        }
        // Marks from here: what the pass lists and what changes meanwhile.
        self.rep.begin_resync();
        self.resync_at = Some(ServedCursor::START);
    }

    /// One chunk of the resync under way: at most `resync_chunk`
    /// sessions (or calls) listed under one hold of the core lock, then
    /// written into the engine; once all is listed, the sweep deletes what
    /// this node owns and no longer serves, `resync_chunk` entries a turn
    /// (docs/anypsp-protocol.md 17.3). The task yields between chunks.
    pub(super) fn resync_chunk(&mut self, ctx: &Ctx) {
        let Some(cursor) = self.resync_at else {
            let held = |c| ctx.core.with_core(|p| p.holds_call(c));
            if self.rep.resyncing() && !self.rep.sweep_step(unix_ms(), ctx.resync_chunk, &held) {
                ctx.stats.resyncs_done.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "anypsp: resync done ({} ghost entries swept so far)",
                    self.rep.stats().swept
                );
            }
            return;
        };
        let mut held = Duration::ZERO;
        let (events, next) = ctx.core.with_core(|p| {
            let t = Instant::now();
            let r = p.served_events_from(t, cursor, ctx.resync_chunk);
            held = t.elapsed();
            r
        });
        ctx.stats
            .resync_hold_max_us
            .fetch_max(held.as_micros() as u64, Ordering::Relaxed);
        ctx.stats.resync_chunks.fetch_add(1, Ordering::Relaxed);
        let now = unix_ms();
        for e in &events {
            self.rep.on_proxy_event(now, e);
        }
        if next.is_done() {
            self.resync_at = None;
            self.rep.end_resync();
        } else {
            self.resync_at = Some(next);
        }
    }
}
