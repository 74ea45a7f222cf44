//! Docker's `filters` query parameter for `GET /networks` and `POST /networks/prune`, and
//! the matching rules of moby's `api/types/filters` and network router: `name` and `id`
//! match exactly or as an unanchored regular expression, `driver` and `scope` exactly,
//! `label` needs every listed key (and value, if given), `type` is `builtin` or `custom`,
//! `dangling` selects unused user-defined networks, `until` networks created no later
//! than a time, and `label!` (prune) excludes networks carrying a label.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::ApiError;
use tapnet_api::{NetworkInspect, PREDEFINED_NETWORKS};

/// Filter keys `GET /networks` accepts.
pub const LIST_FILTERS: &[&str] = &["dangling", "driver", "id", "label", "name", "scope", "type"];
/// Filter keys `POST /networks/prune` accepts.
pub const PRUNE_FILTERS: &[&str] = &["label", "label!", "until"];

/// A parsed `filters` parameter. Each list holds the values given for one key; an empty
/// list does not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkFilters {
    /// `name`: exact name or regular expression.
    pub name: Vec<String>,
    /// `id`: exact id or regular expression (so a prefix matches).
    pub id: Vec<String>,
    /// `driver`: exact driver name.
    pub driver: Vec<String>,
    /// `label`: `key` or `key=value`; all must match.
    pub label: Vec<String>,
    /// `label!` (prune only): networks matching all of these are kept.
    pub label_not: Vec<String>,
    /// `scope`: `local`, `swarm`, `global`.
    pub scope: Vec<String>,
    /// `type`: `builtin` and/or `custom`.
    pub kind: Vec<String>,
    /// `dangling`: `Some(true)` selects unused user-defined networks only,
    /// `Some(false)` the others.
    pub dangling: Option<bool>,
    /// `until` (prune only): networks created after this time are kept.
    pub until: Option<SystemTime>,
}

/// The two JSON forms Docker accepts: `{"key":{"value":true}}` and the older
/// `{"key":["value"]}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Values {
    Set(BTreeMap<String, bool>),
    List(Vec<String>),
}

/// Docker's `filters` parameter as key → values (`""` means none), accepting only the
/// keys in `accepted`.
pub(super) fn parse_raw(
    param: &str,
    accepted: &[&str],
) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    if param.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let raw: BTreeMap<String, Values> = serde_json::from_str(param)
        .map_err(|e| ApiError::bad_request(format!("invalid filters: {e}")))?;
    let mut out = BTreeMap::new();
    for (key, values) in raw {
        if !accepted.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
        }
        let values: Vec<String> = match values {
            Values::Set(m) => m.into_keys().collect(),
            Values::List(l) => l,
        };
        out.insert(key, values);
    }
    Ok(out)
}

impl NetworkFilters {
    /// Parse Docker's `filters` parameter (`""` means none), accepting only the keys in
    /// `accepted`. `now` anchors a relative `until` (`24h`).
    pub fn parse(
        param: &str,
        accepted: &[&str],
        now: SystemTime,
    ) -> Result<NetworkFilters, ApiError> {
        let mut f = NetworkFilters::default();
        for (key, values) in parse_raw(param, accepted)? {
            match key.as_str() {
                "name" => f.name = values,
                "id" => f.id = values,
                "driver" => f.driver = values,
                "label" => f.label = values,
                "label!" => f.label_not = values,
                "scope" => f.scope = values,
                "type" => {
                    if let Some(bad) = values.iter().find(|v| *v != "builtin" && *v != "custom") {
                        return Err(ApiError::bad_request(format!(
                            "invalid filter: 'type'='{bad}'"
                        )));
                    }
                    f.kind = values;
                }
                "dangling" => f.dangling = parse_dangling(&values)?,
                "until" => f.until = parse_until(&values, now)?,
                _ => {}
            }
        }
        Ok(f)
    }

    /// True when no key filters anything.
    pub fn is_empty(&self) -> bool {
        *self == NetworkFilters::default()
    }

    /// Does `net` pass every filter? `in_use` says whether any endpoint is attached to it
    /// (for `dangling`; lists leave `Containers` empty, so the caller knows best).
    pub fn matches(&self, net: &NetworkInspect, in_use: bool) -> bool {
        let predefined = PREDEFINED_NETWORKS.contains(&net.name.as_str());
        if !self.driver.is_empty() && !self.driver.contains(&net.driver) {
            return false;
        }
        if !self.scope.is_empty() && !self.scope.contains(&net.scope) {
            return false;
        }
        if !self.name.is_empty() && !self.name.iter().any(|p| pattern_match(p, &net.name)) {
            return false;
        }
        if !self.id.is_empty() && !self.id.iter().any(|p| pattern_match(p, &net.id)) {
            return false;
        }
        if !match_kv_list(&self.label, &net.labels) {
            return false;
        }
        if !self.label_not.is_empty() && match_kv_list(&self.label_not, &net.labels) {
            return false;
        }
        if !self.kind.is_empty() {
            let kind = if predefined { "builtin" } else { "custom" };
            if !self.kind.iter().any(|k| k == kind) {
                return false;
            }
        }
        if let Some(dangling) = self.dangling {
            let is_dangling = !predefined && !in_use;
            if dangling != is_dangling {
                return false;
            }
        }
        if let Some(until) = self.until {
            // Docker keeps networks created after `until`; an unreadable time is kept too.
            match parse_timestamp(&net.created) {
                Some(created) if created <= until => {}
                _ => return false,
            }
        }
        true
    }
}

/// moby `filters.Args.Match`: equal, or an unanchored regular expression that matches.
/// A pattern that is not a valid expression only matches by equality.
fn pattern_match(pattern: &str, s: &str) -> bool {
    pattern == s
        || regex_lite::Regex::new(pattern)
            .map(|re| re.is_match(s))
            .unwrap_or(false)
}

/// moby `filters.Args.MatchKVList`: every `key` must be present and every `key=value`
/// must be equal.
fn match_kv_list(filters: &[String], labels: &BTreeMap<String, String>) -> bool {
    if filters.is_empty() {
        return true;
    }
    filters.iter().all(|f| match f.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(f.as_str()),
    })
}

fn parse_dangling(values: &[String]) -> Result<Option<bool>, ApiError> {
    match values {
        [] => Ok(None),
        [v] => match v.as_str() {
            "1" | "true" => Ok(Some(true)),
            "0" | "false" => Ok(Some(false)),
            _ => Err(ApiError::bad_request(
                "invalid value for filter 'dangling', must be \"true\" (or \"1\"), or \"false\" (or \"0\")",
            )),
        },
        _ => Err(ApiError::bad_request(
            "got more than one value for filter key \"dangling\"",
        )),
    }
}

fn parse_until(values: &[String], now: SystemTime) -> Result<Option<SystemTime>, ApiError> {
    match values {
        [] => Ok(None),
        [v] => parse_time_or_duration(v, now).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("failed to parse value as time or duration: {v:?}"))
        }),
        _ => Err(ApiError::bad_request(
            "more than one until filter specified",
        )),
    }
}

/// moby `timetypes.GetTimestamp`: a Go duration before `now` (`10m`, `1h30m`), Unix
/// seconds (`1700000000.5`), or a date and time (`2024-01-02`, `2024-01-02T15:04:05Z`,
/// `…+02:00`). A time without a zone is read as UTC (Docker reads it as the daemon's
/// local time).
pub fn parse_time_or_duration(v: &str, now: SystemTime) -> Option<SystemTime> {
    if let Some(d) = parse_go_duration(v) {
        return Some(match d {
            (false, d) => now.checked_sub(d).unwrap_or(UNIX_EPOCH),
            (true, d) => now + d,
        });
    }
    if let Some((secs, frac)) = split_unix(v) {
        return Some(UNIX_EPOCH + Duration::new(secs, frac));
    }
    parse_timestamp(v)
}

/// `123` or `123.456`: seconds and nanoseconds since the epoch.
fn split_unix(v: &str) -> Option<(u64, u32)> {
    let (s, f) = v.split_once('.').unwrap_or((v, ""));
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !f.bytes().all(|b| b.is_ascii_digit()) || f.len() > 9 {
        return None;
    }
    let nanos = if f.is_empty() {
        0
    } else {
        f.parse::<u32>().ok()? * 10u32.pow(9 - f.len() as u32)
    };
    Some((s.parse().ok()?, nanos))
}

/// Go's `time.ParseDuration`: an optional sign, then one or more decimal numbers each
/// with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`). Returns (negative, magnitude).
fn parse_go_duration(v: &str) -> Option<(bool, Duration)> {
    let (neg, mut rest) = match v.as_bytes().first()? {
        b'-' => (true, &v[1..]),
        b'+' => (false, &v[1..]),
        _ => (false, v),
    };
    if rest == "0" {
        return Some((false, Duration::ZERO));
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += num * scale;
    }
    Duration::try_from_secs_f64(total).ok().map(|d| (neg, d))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3339 and its relaxed forms: `YYYY-MM-DD`, optionally `T` or a space and
/// `HH:MM[:SS[.frac]]`, optionally `Z` or `±HH:MM`. No zone means UTC.
pub fn parse_timestamp(v: &str) -> Option<SystemTime> {
    fn num(s: &str) -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    }
    let v = v.trim();
    let (date, mut rest) = (v.get(..10)?, v.get(10..)?);
    let (y, m, d) = (
        num(&date[0..4])?,
        num(date.get(5..7)?)?,
        num(date.get(8..10)?)?,
    );
    if date.as_bytes()[4] != b'-' || date.as_bytes()[7] != b'-' {
        return None;
    }
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let (mut hh, mut mm, mut ss, mut nanos) = (0i64, 0i64, 0i64, 0u32);
    if rest.starts_with(['T', 't', ' ']) {
        let t = &rest[1..];
        let end = t
            .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
            .unwrap_or(t.len());
        let (clock, after) = t.split_at(end);
        let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
        let parts: Vec<&str> = hms.split(':').collect();
        match parts.as_slice() {
            [h, mi] => (hh, mm) = (num(h)?, num(mi)?),
            [h, mi, s] => (hh, mm, ss) = (num(h)?, num(mi)?, num(s)?),
            _ => return None,
        }
        if !frac.is_empty() {
            let digits = &frac[..frac.len().min(9)];
            nanos = u32::try_from(num(digits)?).ok()? * 10u32.pow(9 - digits.len() as u32);
        }
        if hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
        rest = after;
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = rest[1..].split_once(':')?;
            sign * (num(oh)? * 3600 + num(om)? * 60)
        }
    };
    let secs = days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, id: &str, driver: &str, labels: &[(&str, &str)]) -> NetworkInspect {
        NetworkInspect {
            name: name.into(),
            id: id.into(),
            driver: driver.into(),
            scope: "local".into(),
            created: "2024-01-02T03:04:05.000000006Z".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..NetworkInspect::default()
        }
    }

    fn list(param: &str) -> NetworkFilters {
        NetworkFilters::parse(param, LIST_FILTERS, UNIX_EPOCH).unwrap()
    }

    #[test]
    fn both_json_forms_parse() {
        let a = list(r#"{"name":{"pets":true},"driver":{"bridge":true}}"#);
        let b = list(r#"{"name":["pets"],"driver":["bridge"]}"#);
        assert_eq!(a, b);
        assert_eq!(a.name, ["pets"]);
        assert!(list("").is_empty() && list("{}").is_empty());
    }

    #[test]
    fn bad_filters_are_400_with_docker_texts() {
        let e = |p: &str, acc: &[&str]| NetworkFilters::parse(p, acc, UNIX_EPOCH).unwrap_err();
        assert_eq!(e("{", LIST_FILTERS).status, 400);
        assert_eq!(
            e(r#"{"until":["1h"]}"#, LIST_FILTERS).message,
            "invalid filter 'until'"
        );
        assert_eq!(
            e(r#"{"name":["x"]}"#, PRUNE_FILTERS).message,
            "invalid filter 'name'"
        );
        assert_eq!(
            e(r#"{"type":["odd"]}"#, LIST_FILTERS).message,
            "invalid filter: 'type'='odd'"
        );
        assert!(
            e(r#"{"dangling":["maybe"]}"#, LIST_FILTERS)
                .message
                .starts_with("invalid value for filter 'dangling'")
        );
        assert_eq!(
            e(r#"{"until":["soon"]}"#, PRUNE_FILTERS).message,
            "failed to parse value as time or duration: \"soon\""
        );
    }

    #[test]
    fn matching_follows_moby() {
        let pets = net("pets", "abc123", "bridge", &[("team", "a"), ("env", "dev")]);
        let bridge = net("bridge", "def456", "bridge", &[]);
        assert!(list(r#"{"name":["pe"]}"#).matches(&pets, false)); // regex, unanchored
        assert!(list(r#"{"name":["^pets$"]}"#).matches(&pets, false));
        assert!(!list(r#"{"name":["^pe$"]}"#).matches(&pets, false));
        assert!(list(r#"{"id":["abc"]}"#).matches(&pets, false));
        assert!(!list(r#"{"driver":["bri"]}"#).matches(&pets, false)); // exact
        assert!(list(r#"{"label":["team","env=dev"]}"#).matches(&pets, false));
        assert!(!list(r#"{"label":["team","env=prod"]}"#).matches(&pets, false));
        assert!(list(r#"{"type":["custom"]}"#).matches(&pets, false));
        assert!(!list(r#"{"type":["custom"]}"#).matches(&bridge, false));
        assert!(list(r#"{"type":["builtin","custom"]}"#).matches(&bridge, false));
        assert!(list(r#"{"dangling":["true"]}"#).matches(&pets, false));
        assert!(!list(r#"{"dangling":["true"]}"#).matches(&pets, true));
        assert!(!list(r#"{"dangling":["1"]}"#).matches(&bridge, false));
        assert!(list(r#"{"dangling":["false"]}"#).matches(&bridge, false));
        assert!(list(r#"{"scope":["local"]}"#).matches(&pets, false));
    }

    #[test]
    fn prune_filters_until_and_label_not() {
        let pets = net("pets", "abc", "bridge", &[("keep", "yes")]);
        let created = parse_timestamp(&pets.created).unwrap();
        let prune = |p: &str, now| NetworkFilters::parse(p, PRUNE_FILTERS, now).unwrap();
        assert!(!prune(r#"{"label!":["keep"]}"#, UNIX_EPOCH).matches(&pets, false));
        assert!(prune(r#"{"label!":["keep=no"]}"#, UNIX_EPOCH).matches(&pets, false));
        let now = created + Duration::from_secs(7200);
        assert!(prune(r#"{"until":["1h"]}"#, now).matches(&pets, false));
        assert!(!prune(r#"{"until":["3h"]}"#, now).matches(&pets, false));
        assert!(prune(r#"{"until":["2024-01-03"]}"#, now).matches(&pets, false));
        assert!(!prune(r#"{"until":["2024-01-02T03:04:05+01:00"]}"#, now).matches(&pets, false));
        assert!(prune(r#"{"until":["1704164646"]}"#, now).matches(&pets, false));
    }

    #[test]
    fn go_durations() {
        let d = |s| parse_go_duration(s).map(|(n, d)| (n, d.as_millis()));
        assert_eq!(d("1h30m"), Some((false, 5_400_000)));
        assert_eq!(d("1.5h"), Some((false, 5_400_000)));
        assert_eq!(d("300ms"), Some((false, 300)));
        assert_eq!(d("-2s"), Some((true, 2000)));
        assert_eq!(d("0"), Some((false, 0)));
        assert_eq!(d("10"), None);
        assert_eq!(d("h"), None);
        assert_eq!(d("5d"), None);
    }

    #[test]
    fn timestamps() {
        let t = |s| {
            parse_timestamp(s).map(|t| {
                let d = t.duration_since(UNIX_EPOCH).unwrap();
                (d.as_secs(), d.subsec_nanos())
            })
        };
        assert_eq!(t("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(t("2000-02-29T00:00:00.000000005Z"), Some((951_782_400, 5)));
        assert_eq!(
            t("2026-11-28T02:35:38.000000123Z"),
            Some((1_795_833_338, 123))
        );
        assert_eq!(
            t("2026-11-28 02:35:38.5"),
            Some((1_795_833_338, 500_000_000))
        );
        assert_eq!(t("2026-11-28T04:35:38+02:00"), Some((1_795_833_338, 0)));
        assert_eq!(t("2026-11-28"), Some((1_795_824_000, 0)));
        assert_eq!(t("2026-13-28"), None);
        assert_eq!(t("yesterday"), None);
    }
}
