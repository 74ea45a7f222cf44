//! The engine's counters as flat `name → value` maps, so a measurement can report what
//! changed while it ran: drops by reason, batch sizes per stage.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tapnet_engine::{Engine, EngineStats};

/// Every counter of the engine, flattened.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot(BTreeMap<String, u64>);

/// Counter names that count lost frames.
const DROP_FIELDS: &[&str] = &[
    "rx_errors",
    "rx_no_buffer",
    "rx_ring_full",
    "tx_errors",
    "tx_queue_full",
    "tx_too_big",
    "tx_offload_errors",
    "drop_no_port",
    "drop_no_buffer",
    "drop_switch",
    "drop_malformed",
    "drop_no_domain",
    "drop_hairpin",
    "drop_bad_source",
];

impl Snapshot {
    pub(crate) fn take(engine: &Engine) -> Snapshot {
        Snapshot::of(&engine.stats())
    }

    fn of(s: &EngineStats) -> Snapshot {
        let mut m = BTreeMap::new();
        for p in &s.ports {
            let k = |f: &str| format!("port{}({}).{f}", p.id.0, p.info.name);
            let st = &p.stats;
            for (f, v) in [
                ("rx_packets", st.rx_packets),
                ("rx_bytes", st.rx_bytes),
                ("rx_errors", st.rx_errors),
                ("rx_no_buffer", st.rx_no_buffer),
                ("rx_ring_full", st.rx_ring_full),
                ("tx_packets", st.tx_packets),
                ("tx_bytes", st.tx_bytes),
                ("tx_errors", st.tx_errors),
                ("tx_queue_full", st.tx_queue_full),
                ("tx_too_big", st.tx_too_big),
                ("tx_segmented", st.tx_segmented),
                ("tx_offload_errors", st.tx_offload_errors),
            ] {
                m.insert(k(f), v);
            }
        }
        for st in &s.stages {
            let k = |f: &str| format!("stage.{}.{f}", st.kind.name());
            let c = &st.stats;
            for (f, v) in [
                ("batches", c.batches),
                ("packets", c.packets),
                ("drop_no_port", c.drop_no_port),
                ("drop_no_buffer", c.drop_no_buffer),
                ("drop_switch", c.drop_switch),
                ("sleeps", c.sleeps),
            ] {
                m.insert(k(f), v);
            }
        }
        m.insert("switch.drop_malformed".into(), s.switch.drop_malformed);
        m.insert("switch.drop_no_domain".into(), s.switch.drop_no_domain);
        for (d, c) in &s.domains {
            let k = |f: &str| format!("domain{}.{f}", d.0);
            for (f, v) in [
                ("flooded", c.flooded),
                ("drop_hairpin", c.drop_hairpin),
                ("drop_bad_source", c.drop_bad_source),
            ] {
                m.insert(k(f), v);
            }
        }
        Snapshot(m)
    }

    /// What grew since `before`.
    pub(crate) fn since(&self, before: &Snapshot) -> Delta {
        Delta(
            self.0
                .iter()
                .map(|(k, &v)| {
                    (
                        k.clone(),
                        v.saturating_sub(before.0.get(k).copied().unwrap_or(0)),
                    )
                })
                .collect(),
        )
    }
}

/// Counter growth over one measurement.
#[derive(Clone, Debug, Default)]
pub(crate) struct Delta(BTreeMap<String, u64>);

impl Delta {
    /// Non-zero drop counters.
    pub(crate) fn drops(&self) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .filter(|(k, v)| **v > 0 && DROP_FIELDS.iter().any(|f| k.ends_with(&format!(".{f}"))))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    fn get(&self, k: &str) -> u64 {
        self.0.get(k).copied().unwrap_or(0)
    }

    /// The sum of every counter whose name ends with `suffix` (`.rx_packets`, `.flooded`).
    pub(crate) fn sum(&self, suffix: &str) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .map(|(_, v)| v)
            .sum()
    }

    /// Frames, batches, average batch and sleeps per stage.
    pub(crate) fn stages(&self) -> Value {
        let mut out = serde_json::Map::new();
        for s in ["rx", "switch", "tx"] {
            let p = self.get(&format!("stage.{s}.packets"));
            let b = self.get(&format!("stage.{s}.batches"));
            let avg = if b > 0 {
                (p as f64 / b as f64 * 10.0).round() / 10.0
            } else {
                0.0
            };
            out.insert(
                s.into(),
                json!({"packets": p, "batches": b, "avg_batch": avg,
                       "sleeps": self.get(&format!("stage.{s}.sleeps"))}),
            );
        }
        Value::Object(out)
    }

    /// Superframes split in software, summed over ports.
    pub(crate) fn segmented(&self) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.ends_with(".tx_segmented"))
            .map(|(_, v)| v)
            .sum()
    }

    /// Average frame size received from ports (bytes / packets).
    pub(crate) fn avg_rx_frame(&self) -> f64 {
        let (mut p, mut b) = (0u64, 0u64);
        for (k, v) in &self.0 {
            if k.ends_with(".rx_packets") {
                p += v;
            } else if k.ends_with(".rx_bytes") {
                b += v;
            }
        }
        if p > 0 { b as f64 / p as f64 } else { 0.0 }
    }

    /// One-line summary of the drops, empty when there were none.
    pub(crate) fn drops_note(&self) -> String {
        let d = self.drops();
        if d.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = d.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("engine drops: {}", parts.join(" "))
    }
}
