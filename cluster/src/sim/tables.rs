//! The tables in the simulation: operations on a node's tables, noted for the measures
//! ([`super::track`]).

use std::time::Duration;

use super::Sim;
use super::track::Write;
use crate::table::TableError;

impl Sim {
    fn running(&self, index: usize) -> Result<(), TableError> {
        if self.nodes[index].running {
            Ok(())
        } else {
            // A stopped node is attached to nothing.
            Err(TableError::NotAttached)
        }
    }

    /// Attach node `index` to `net`.
    pub fn join_network(&mut self, index: usize, net: &str) -> Result<(), TableError> {
        self.running(index)?;
        let now = self.now;
        let r = self.nodes[index].node.join_network(net, now);
        self.drain(index);
        r
    }

    /// Detach node `index` from `net`.
    pub fn leave_network(&mut self, index: usize, net: &str) -> Result<(), TableError> {
        self.running(index)?;
        let now = self.now;
        let r = self.nodes[index].node.leave_network(net, now);
        for w in self
            .track
            .writes
            .values_mut()
            .flatten()
            .filter(|w| w.net == net)
        {
            w.waiting.remove(&index);
        }
        self.drain(index);
        self.track.settle(now);
        r
    }

    /// Node `index` writes `key` = `value` on `net`; the time until every live
    /// node attached to `net` (at the write) shows it is measured
    /// ([`Sim::propagations`]). An earlier write of the same key still pending is
    /// no longer measured.
    pub fn set_entry(
        &mut self,
        index: usize,
        net: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), TableError> {
        self.running(index)?;
        let now = self.now;
        self.nodes[index].node.set(net, key, value, now)?;
        let owner = self.nodes[index].node.id().key;
        let ws = self.track.writes.entry(owner).or_default();
        ws.retain(|w| !(w.key == key && w.net == net));
        let waiting = (0..self.nodes.len())
            .filter(|&i| {
                i != index
                    && self.nodes[i].running
                    && self.nodes[i]
                        .node
                        .tables()
                        .networks()
                        .iter()
                        .any(|n| n == net)
            })
            .collect();
        self.track.writes.entry(owner).or_default().push(Write {
            net: net.to_owned(),
            key: key.to_owned(),
            value: value.to_vec(),
            since: now,
            waiting,
        });
        self.drain(index);
        self.track.settle(now);
        Ok(())
    }

    /// Node `index` deletes its entry `key` on `net`.
    pub fn delete_entry(&mut self, index: usize, net: &str, key: &str) -> Result<(), TableError> {
        self.running(index)?;
        let now = self.now;
        let r = self.nodes[index].node.delete(net, key, now);
        self.drain(index);
        r
    }

    /// Times from a write ([`Sim::set_entry`]) until every live node of its
    /// network showed it, in completion order.
    pub fn propagations(&self) -> &[Duration] {
        &self.track.propagations
    }

    /// Writes not yet shown everywhere.
    pub fn pending_propagations(&self) -> usize {
        self.track.writes.values().map(Vec::len).sum()
    }

    /// Stop measuring the writes still pending (as the burst of a start), and
    /// say how many there were.
    pub fn forget_pending_propagations(&mut self) -> usize {
        let n = self.pending_propagations();
        self.track.writes.clear();
        n
    }

    /// Times from a crash until every live node that showed entries of the
    /// crashed node had removed them all (its Remove events), in completion order.
    pub fn entry_detections(&self) -> &[Duration] {
        &self.track.entry_detections
    }

    /// Crashes whose entries some live node still shows.
    pub fn pending_entry_detections(&self) -> usize {
        self.track.crashes.len()
    }
}
