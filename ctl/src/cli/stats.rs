//! `tapnet stats`: the engine's counters, per port, network and stage, and each
//! network's embedded DNS server's.

use tapnet_api::StatsResponse;

use crate::cli::args::StatsArgs;
use crate::cli::client::Client;
use crate::cli::format::{human_size, natural_cmp, pretty_json, table};

pub(crate) fn run(client: &Client, a: StatsArgs) -> anyhow::Result<u8> {
    let stats: StatsResponse = client.block_on(client.get("/stats"))?;
    match a.format.as_deref().map(str::trim) {
        None | Some("table") => print!("{}", render(&stats)),
        Some("json") => println!("{}", serde_json::to_string(&stats)?),
        Some("pretty") => println!("{}", pretty_json(&stats)),
        Some(f) => anyhow::bail!("unknown --format {f:?}: use table or json"),
    }
    Ok(0)
}

fn drops_text(drops: &std::collections::BTreeMap<String, u64>) -> String {
    let total: u64 = drops.values().sum();
    let named: Vec<String> = drops
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if named.is_empty() {
        total.to_string()
    } else {
        format!("{total} ({})", named.join(", "))
    }
}

/// Tables: ports, then networks, then stages and switch-wide drops.
pub(crate) fn render(s: &StatsResponse) -> String {
    let mut ports = s.ports.clone();
    ports.sort_by(|a, b| {
        natural_cmp(&a.sandbox, &b.sandbox).then_with(|| natural_cmp(&a.name, &b.name))
    });
    let rows: Vec<Vec<String>> = ports
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.kind.clone(),
                or_dash(&p.network),
                or_dash(&p.sandbox),
                p.rx_packets.to_string(),
                human_size(p.rx_bytes),
                p.tx_packets.to_string(),
                human_size(p.tx_bytes),
                drops_text(&p.drops),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "PORT",
            "KIND",
            "NETWORK",
            "SANDBOX",
            "RX PACKETS",
            "RX BYTES",
            "TX PACKETS",
            "TX BYTES",
            "DROPS",
        ],
        &rows,
    );
    if !s.networks.is_empty() {
        let rows: Vec<Vec<String>> = s
            .networks
            .iter()
            .map(|n| {
                vec![
                    n.network.clone(),
                    n.received.to_string(),
                    n.forwarded.to_string(),
                    n.flooded.to_string(),
                    drops_text(&n.drops),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["NETWORK", "RECEIVED", "FORWARDED", "FLOODED", "DROPS"],
            &rows,
        ));
    }
    if !s.stages.is_empty() {
        let rows: Vec<Vec<String>> = s
            .stages
            .iter()
            .map(|st| {
                vec![
                    st.stage.clone(),
                    st.worker.to_string(),
                    st.packets.to_string(),
                    st.batches.to_string(),
                    drops_text(&st.drops),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["STAGE", "WORKER", "PACKETS", "BATCHES", "DROPS"],
            &rows,
        ));
    }
    if !s.external.is_empty() {
        let rows: Vec<Vec<String>> = s
            .external
            .iter()
            .map(|e| {
                let c = |k: &str| e.counters.get(k).copied().unwrap_or(0).to_string();
                let refused: u64 = e
                    .counters
                    .iter()
                    .filter(|(k, _)| k.ends_with("_limit") || k.starts_with("drop_"))
                    .map(|(_, v)| *v)
                    .sum();
                vec![
                    e.network.clone(),
                    c("tcp_opened"),
                    c("tcp_inbound"),
                    c("tcp_closed"),
                    c("udp_opened"),
                    c("icmp_opened"),
                    refused.to_string(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &[
                "EXTERNAL",
                "TCP OUT",
                "TCP IN",
                "TCP CLOSED",
                "UDP FLOWS",
                "ICMP FLOWS",
                "REFUSED",
            ],
            &rows,
        ));
        out.push_str(&format!(
            "host sockets: {} open, {} published ports; flow buffers {} of {} KiB\n",
            s.host.sockets,
            s.host.published,
            s.host.flow_memory / 1024,
            s.host.flow_memory_limit / 1024
        ));
    }
    if !s.dns.is_empty() {
        let rows: Vec<Vec<String>> = s
            .dns
            .iter()
            .map(|d| {
                [
                    d.queries,
                    d.answered,
                    d.nxdomain,
                    d.forwarded,
                    d.timeouts,
                    d.refused,
                    d.rate_limited,
                    d.formerr,
                    d.truncated,
                ]
                .iter()
                .map(u64::to_string)
                .fold(vec![d.network.clone()], |mut row, v| {
                    row.push(v);
                    row
                })
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &[
                "DNS",
                "QUERIES",
                "ANSWERED",
                "NXDOMAIN",
                "FORWARDED",
                "TIMEOUTS",
                "REFUSED",
                "RATE LIMITED",
                "FORMERR",
                "TRUNCATED",
            ],
            &rows,
        ));
    }
    out.push_str(&format!(
        "\nswitch: {} frames, drops {}; pool: {} small and {} large slots free\n",
        s.switch.processed,
        drops_text(&s.switch.drops),
        s.pool.small_free,
        s.pool.large_free
    ));
    if s.host.rootless_reaped > 0 {
        out.push_str(&format!(
            "rootless sandboxes reaped after their process exited: {}\n",
            s.host.rootless_reaped
        ));
    }
    out.push_str(&api_line(&s.api));
    out
}

/// The API server's line: open connections and every counter, zeros too.
fn api_line(api: &tapnet_api::ApiStatsEntry) -> String {
    let counters: Vec<String> = api
        .counters
        .iter()
        .map(|(k, v)| format!("{}={v}", k.strip_prefix("api_").unwrap_or(k)))
        .collect();
    if counters.is_empty() {
        return format!("api: {} connections\n", api.connections);
    }
    format!(
        "api: {} connections; {}\n",
        api.connections,
        counters.join(", ")
    )
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapnet_api::{PortStatsEntry, StageStatsEntry};

    #[test]
    fn renders_ports_and_stages() {
        let mut s = StatsResponse::default();
        s.ports.push(PortStatsEntry {
            name: "tn0".into(),
            kind: "tap".into(),
            network: "pets".into(),
            sandbox: "web".into(),
            rx_packets: 3,
            rx_bytes: 1_500,
            tx_packets: 4,
            tx_bytes: 2_000_000,
            drops: [
                ("rx_no_buffer".to_string(), 2),
                ("tx_errors".to_string(), 0),
            ]
            .into_iter()
            .collect(),
            ..PortStatsEntry::default()
        });
        s.stages.push(StageStatsEntry {
            stage: "rx".into(),
            packets: 7,
            ..StageStatsEntry::default()
        });
        let t = render(&s);
        let mut lines = t.lines();
        assert_eq!(
            lines.next().unwrap(),
            "PORT      KIND      NETWORK   SANDBOX   RX PACKETS   RX BYTES   TX PACKETS   TX BYTES   DROPS"
        );
        assert_eq!(
            lines.next().unwrap(),
            "tn0       tap       pets      web       3            1.5kB      4            2MB        2 (rx_no_buffer=2)"
        );
        assert!(
            t.contains("\nSTAGE     WORKER    PACKETS   BATCHES   DROPS\nrx        0         7")
        );
        assert!(t.contains("switch: 0 frames, drops 0"));
    }

    #[test]
    fn renders_the_dns_counters_per_network() {
        let mut s = StatsResponse::default();
        s.dns.push(tapnet_api::DnsStatsEntry {
            network: "pets".into(),
            queries: 12,
            answered: 7,
            nxdomain: 2,
            forwarded: 3,
            timeouts: 1,
            ..Default::default()
        });
        let t = render(&s);
        let head = t.lines().find(|l| l.starts_with("DNS")).unwrap();
        assert_eq!(
            head.split_whitespace().collect::<Vec<_>>(),
            [
                "DNS",
                "QUERIES",
                "ANSWERED",
                "NXDOMAIN",
                "FORWARDED",
                "TIMEOUTS",
                "REFUSED",
                "RATE",
                "LIMITED",
                "FORMERR",
                "TRUNCATED"
            ]
        );
        let row = t.lines().find(|l| l.starts_with("pets")).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["pets", "12", "7", "2", "3", "1", "0", "0", "0", "0"]
        );
        assert!(!render(&StatsResponse::default()).contains("NXDOMAIN"));
    }

    #[test]
    fn renders_the_api_counters() {
        let mut s = StatsResponse::default();
        s.api.connections = 2;
        s.api.counters = [
            ("api_connections_refused".to_string(), 3),
            ("api_header_timeouts".to_string(), 0),
        ]
        .into_iter()
        .collect();
        assert!(
            render(&s).ends_with("api: 2 connections; connections_refused=3, header_timeouts=0\n"),
            "{}",
            render(&s)
        );
    }
}
