//! Measurements and how they are printed: a table for people, JSON lines for tools.

use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::sys::{Machine, round};

/// Which direction is better for a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Better {
    /// Throughput: ratio = tapnet / baseline.
    Higher,
    /// Latency, memory: ratio = baseline / tapnet.
    Lower,
}

/// One figure: tapnet against a baseline measured in the same run.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Measurement {
    pub(crate) scenario: &'static str,
    pub(crate) case: String,
    pub(crate) unit: &'static str,
    pub(crate) tapnet: f64,
    pub(crate) baseline: String,
    pub(crate) baseline_value: f64,
    /// tapnet / baseline when higher is better, baseline / tapnet when lower is: above 1
    /// means tapnet does better. `null` when undefined (a zero).
    pub(crate) ratio: Option<f64>,
    pub(crate) better: Better,
    /// Peak RSS of the perf process (which hosts the engine) during the measurement.
    pub(crate) peak_rss_mib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) target_met: Option<bool>,
    /// Short human summary of the details (also printed in the table).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) note: String,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub(crate) details: Map<String, Value>,
    pub(crate) machine: Machine,
}

impl Measurement {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        scenario: &'static str,
        case: impl Into<String>,
        unit: &'static str,
        better: Better,
        tapnet: f64,
        baseline: impl Into<String>,
        baseline_value: f64,
        machine: &Machine,
    ) -> Measurement {
        let (num, den) = match better {
            Better::Higher => (tapnet, baseline_value),
            Better::Lower => (baseline_value, tapnet),
        };
        let ratio = (den > 0.0 && num.is_finite() && den.is_finite()).then(|| round(num / den, 3));
        Measurement {
            scenario,
            case: case.into(),
            unit,
            tapnet: round(tapnet, 3),
            baseline: baseline.into(),
            baseline_value: round(baseline_value, 3),
            ratio,
            better,
            peak_rss_mib: None,
            target: None,
            target_met: None,
            note: String::new(),
            details: Map::new(),
            machine: machine.clone(),
        }
    }

    pub(crate) fn rss(mut self, peak: Option<f64>) -> Self {
        self.peak_rss_mib = peak.map(|v| round(v, 1));
        self
    }

    pub(crate) fn target(mut self, text: impl Into<String>, met: bool) -> Self {
        self.target = Some(text.into());
        self.target_met = Some(met);
        self
    }

    pub(crate) fn note(mut self, text: impl Into<String>) -> Self {
        let text = text.into();
        if !text.is_empty() {
            if !self.note.is_empty() {
                self.note.push_str("; ");
            }
            self.note.push_str(&text);
        }
        self
    }

    pub(crate) fn detail(mut self, key: &str, v: impl Serialize) -> Self {
        self.details.insert(
            key.to_string(),
            serde_json::to_value(v).unwrap_or(Value::Null),
        );
        self
    }
}

/// Collects measurements; prints each JSON line as soon as it is known.
pub(crate) struct Reporter {
    json: bool,
    machine: Machine,
    rows: Vec<Row>,
}

/// One line of the table.
enum Row {
    Measured(Box<Measurement>),
    Skipped {
        scenario: &'static str,
        case: String,
        reason: String,
        /// The baseline, when it was measured and only tapnet's side could not be:
        /// (unit, label, value).
        baseline: Option<(&'static str, String, f64)>,
    },
}

/// One side's result of a case measured on several datapaths (tapnet and each
/// baseline): the figure, a note and details for the record.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sample {
    pub(crate) value: f64,
    pub(crate) note: String,
    pub(crate) details: Map<String, Value>,
}

impl Sample {
    pub(crate) fn new(value: f64) -> Sample {
        Sample {
            value,
            ..Default::default()
        }
    }

    pub(crate) fn note(mut self, text: impl Into<String>) -> Self {
        self.note = text.into();
        self
    }

    pub(crate) fn detail(mut self, key: &str, v: impl Serialize) -> Self {
        self.details.insert(
            key.to_string(),
            serde_json::to_value(v).unwrap_or(Value::Null),
        );
        self
    }
}

impl Reporter {
    pub(crate) fn new(json: bool, machine: Machine) -> Reporter {
        Reporter {
            json,
            machine,
            rows: Vec::new(),
        }
    }

    pub(crate) fn machine(&self) -> &Machine {
        &self.machine
    }

    pub(crate) fn push(&mut self, mut m: Measurement) {
        // How busy the machine was: these machines are shared.
        if let Some(l) = std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        }) {
            m = m.detail("loadavg_1m", l);
        }
        if self.json {
            if let Ok(line) = serde_json::to_string(&m) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
        eprintln!(
            "  {} | {} | {} {} vs {} {} | ratio {}",
            m.scenario,
            m.case,
            fmt_num(m.tapnet),
            m.unit,
            m.baseline,
            fmt_num(m.baseline_value),
            m.ratio
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "-".into())
        );
        self.rows.push(Row::Measured(Box::new(m)));
    }

    /// A case that cannot be measured here, and why: a table row and a JSON line with
    /// `skipped` instead of values.
    pub(crate) fn skip(&mut self, scenario: &'static str, case: String, reason: String) {
        eprintln!("  {scenario} | {case} | skipped: {reason}");
        if self.json {
            let v = serde_json::json!({
                "scenario": scenario, "case": case, "skipped": reason, "machine": self.machine,
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{v}");
            let _ = out.flush();
        }
        self.rows.push(Row::Skipped {
            scenario,
            case,
            reason,
            baseline: None,
        });
    }

    /// A case whose baseline was measured but whose tapnet side failed: the baseline's
    /// figure is kept (table and JSON), with why tapnet has none.
    pub(crate) fn skip_tapnet(
        &mut self,
        scenario: &'static str,
        case: String,
        reason: String,
        unit: &'static str,
        baseline: &str,
        baseline_value: f64,
    ) {
        let baseline_value = round(baseline_value, 3);
        eprintln!(
            "  {scenario} | {case} | tapnet skipped: {} | {baseline} {} {unit}",
            clip(&reason),
            fmt_num(baseline_value)
        );
        if self.json {
            let v = serde_json::json!({
                "scenario": scenario, "case": case, "skipped": reason, "unit": unit,
                "baseline": baseline, "baseline_value": baseline_value,
                "machine": self.machine,
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{v}");
            let _ = out.flush();
        }
        self.rows.push(Row::Skipped {
            scenario,
            case,
            reason: format!("tapnet: {}", clip(&reason)),
            baseline: Some((unit, baseline.to_string(), baseline_value)),
        });
    }

    /// Records of one case measured on tapnet and on each baseline: one record per
    /// baseline (ratio as `better` says), or, where a side failed, a skip that says why
    /// (keeping the baseline's figure when only tapnet failed). Details of each side go
    /// in with a `tapnet_` and a `baseline_` prefix; `tapnet_rss` is the record's peak
    /// RSS.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push_versus(
        &mut self,
        scenario: &'static str,
        case: &str,
        unit: &'static str,
        better: Better,
        tapnet: &Result<Sample, String>,
        tapnet_rss: Option<f64>,
        baselines: &[(&str, Result<Sample, String>)],
        extra: &dyn Fn(Measurement) -> Measurement,
    ) {
        for (label, base) in baselines {
            let case = format!("{case}, vs {label}");
            match (tapnet, base) {
                (_, Err(e)) => self.skip(scenario, case, format!("{label}: {e}")),
                (Err(e), Ok(b)) => {
                    self.skip_tapnet(scenario, case, e.clone(), unit, label, b.value)
                }
                (Ok(t), Ok(b)) => {
                    let mut m = Measurement::new(
                        scenario,
                        case,
                        unit,
                        better,
                        t.value,
                        *label,
                        b.value,
                        &self.machine,
                    )
                    .rss(tapnet_rss)
                    .note(t.note.clone())
                    .note(if b.note.is_empty() {
                        String::new()
                    } else {
                        format!("{label}: {}", b.note)
                    });
                    for (k, v) in &t.details {
                        m = m.detail(&format!("tapnet_{k}"), v);
                    }
                    for (k, v) in &b.details {
                        m = m.detail(&format!("baseline_{k}"), v);
                    }
                    self.push(extra(m));
                }
            }
        }
    }

    /// The table of everything measured: to stdout, or to stderr when stdout carries JSON.
    pub(crate) fn print_table(&self) {
        let machine = &self.machine;
        let mut s = String::new();
        s.push_str(&format!(
            "machine: {} CPUs, {}, kernel {}\n",
            machine.nproc, machine.cpu, machine.kernel
        ));
        let head = [
            "scenario",
            "case",
            "unit",
            "tapnet",
            "baseline",
            "baseline value",
            "ratio",
            "peak RSS MiB",
            "target",
            "notes",
        ];
        let rows: Vec<[String; 10]> = self
            .rows
            .iter()
            .map(|row| match row {
                Row::Measured(m) => [
                    m.scenario.to_string(),
                    m.case.clone(),
                    m.unit.to_string(),
                    fmt_num(m.tapnet),
                    m.baseline.clone(),
                    fmt_num(m.baseline_value),
                    m.ratio
                        .map(|r| format!("{r:.2}"))
                        .unwrap_or_else(|| "-".into()),
                    m.peak_rss_mib
                        .map(|r| format!("{r:.1}"))
                        .unwrap_or_else(|| "-".into()),
                    match (&m.target, m.target_met) {
                        (Some(t), Some(true)) => format!("{t} ok"),
                        (Some(t), Some(false)) => format!("{t} MISSED"),
                        (Some(t), None) => t.clone(),
                        _ => String::new(),
                    },
                    m.note.clone(),
                ],
                Row::Skipped {
                    scenario,
                    case,
                    reason,
                    baseline,
                } => {
                    let mut r: [String; 10] = Default::default();
                    r[0] = scenario.to_string();
                    r[1] = case.clone();
                    if let Some((unit, label, value)) = baseline {
                        r[2] = unit.to_string();
                        r[4] = label.clone();
                        r[5] = fmt_num(*value);
                    }
                    r[9] = format!("skipped: {reason}");
                    r
                }
            })
            .collect();
        let mut w = head.map(str::len);
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut l = String::from("|");
            for (i, c) in cells.iter().enumerate() {
                let pad = w[i] - c.chars().count();
                l.push(' ');
                l.push_str(c);
                l.push_str(&" ".repeat(pad));
                l.push_str(" |");
            }
            l.push('\n');
            l
        };
        s.push_str(&line(&head.map(String::from)));
        let sep: Vec<String> = w.iter().map(|&n| "-".repeat(n)).collect();
        s.push_str(
            &line(&sep)
                .replace(" | ", "-|-")
                .replace("| ", "|-")
                .replace(" |", "-|"),
        );
        for r in &rows {
            s.push_str(&line(r));
        }
        if self.json {
            eprint!("{s}");
        } else {
            print!("{s}");
        }
    }
}

/// At most 160 characters of `s` (a reason in the table; the JSON line has all of it).
fn clip(s: &str) -> String {
    const MAX: usize = 160;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    let mut c: String = s.chars().take(MAX - 1).collect();
    c.push('…');
    c
}

/// A number with about four significant digits.
pub(crate) fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            nproc: 2,
            cpu: "test".into(),
            kernel: "6.0".into(),
        }
    }

    #[test]
    fn ratio_follows_the_better_direction() {
        let m = Measurement::new("s", "c", "Mpps", Better::Higher, 5.0, "b", 10.0, &machine());
        assert_eq!(m.ratio, Some(0.5));
        let m = Measurement::new("s", "c", "µs", Better::Lower, 20.0, "b", 10.0, &machine());
        assert_eq!(m.ratio, Some(0.5));
        let m = Measurement::new("s", "c", "µs", Better::Lower, 0.0, "b", 10.0, &machine());
        assert_eq!(m.ratio, None);
    }

    #[test]
    fn json_has_the_documented_fields() {
        let m = Measurement::new(
            "s",
            "c",
            "Mpps",
            Better::Higher,
            5.0,
            "memcpy",
            10.0,
            &machine(),
        )
        .rss(Some(12.34));
        let v = serde_json::to_value(&m).unwrap();
        for k in [
            "scenario",
            "case",
            "unit",
            "tapnet",
            "baseline",
            "baseline_value",
            "ratio",
            "peak_rss_mib",
            "machine",
        ] {
            assert!(v.get(k).is_some(), "{k} missing from {v}");
        }
        assert_eq!(v["machine"]["nproc"], 2);
        assert_eq!(v["peak_rss_mib"], 12.3);
    }
}
