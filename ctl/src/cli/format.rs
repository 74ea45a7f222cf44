//! Output as the docker CLI prints it: tables aligned like Go's `tabwriter` with Docker's
//! settings, 12-character ids, natural name order, Go's time and size formats, and a small
//! subset of Go templates (`{{.Field}}`, `{{.A.B}}`, `{{json .}}`, `{{json .Field}}`).

use std::cmp::Ordering;

use serde_json::Value;

/// Docker's tabwriter: minimum cell width 10 (padding included), padding 3. The last
/// column is not padded.
const MIN_WIDTH: usize = 10;
const PADDING: usize = 3;

/// Render rows under a header, aligned as `docker network ls` aligns them.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths = vec![0usize; cols];
    for (i, h) in header.iter().enumerate() {
        widths[i] = h.chars().count();
    }
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            if i + 1 < cols {
                let w = (widths[i] + PADDING).max(MIN_WIDTH);
                s.push_str(c);
                s.extend(std::iter::repeat_n(' ', w - c.chars().count()));
            } else {
                s.push_str(c);
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// The first 12 characters of an id, unless `no_trunc`.
pub(crate) fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.chars().take(12).collect()
    }
}

/// Natural order (`net2` < `net10`), as the docker CLI sorts names.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (&a[..na], &b[..nb]);
                let ta = trim_zeros(da);
                let tb = trim_zeros(db);
                let o = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                if o.is_ne() {
                    return o;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|&&c| c == b'0').count();
    &d[z.min(d.len().saturating_sub(1))..]
}

/// RFC 3339 (`2026-01-01T00:00:01.000001007Z`) as Go's `time.Time.String()` prints it
/// (`2026-01-01 00:00:01.000001007 +0000 UTC`), which is what `docker … --format json`
/// shows as `CreatedAt`. Anything else is returned unchanged.
pub(crate) fn go_time(rfc3339: &str) -> String {
    let Some(body) = rfc3339.strip_suffix('Z') else {
        return rfc3339.to_string();
    };
    let Some((date, time)) = body.split_once('T') else {
        return rfc3339.to_string();
    };
    let time = match time.split_once('.') {
        Some((hms, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                hms.to_string()
            } else {
                format!("{hms}.{frac}")
            }
        }
        None => time.to_string(),
    };
    format!("{date} {time} +0000 UTC")
}

/// Bytes in Docker's `units.HumanSize`: decimal units, 4 significant digits (`1.235MB`).
pub(crate) fn human_size(n: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    let digits = if v >= 100.0 {
        1
    } else if v >= 10.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", UNITS[i])
}

/// Fill a Go-template-like `format` from `v`: `{{.Name}}`, `{{.IPAM.Driver}}`,
/// `{{json .}}`, `{{json .Labels}}`. Strings print bare, other values as JSON, missing
/// fields as `<no value>` (as Go does). `\t` and `\n` escapes are honoured.
pub(crate) fn template(format: &str, v: &Value) -> Result<String, String> {
    let format = format.replace("\\t", "\t").replace("\\n", "\n");
    let mut out = String::new();
    let mut rest = format.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("template: unclosed action in {format:?}"))?;
        let action = after[..end].trim();
        let (json, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        let Some(path) = path.strip_prefix('.') else {
            return Err(format!(
                "template: unsupported action {{{{{action}}}}}: use {{{{.Field}}}} or {{{{json .}}}}"
            ));
        };
        let mut cur = Some(v);
        for key in path.split('.').filter(|k| !k.is_empty()) {
            cur = cur.and_then(|c| c.get(key));
        }
        match (json, cur) {
            (_, None) => out.push_str("<no value>"),
            (false, Some(Value::String(s))) => out.push_str(s),
            (false, Some(Value::Null)) => out.push_str("<no value>"),
            (_, Some(x)) => out.push_str(&x.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Print a listing the way `docker … ls` does: `quiet` prints only ids; `format` is
/// `table` (the default), `json` (one object per line), `table TEMPLATE` (a table of the
/// template's tab-separated cells) or a template per row. `columns` are the default
/// table's (field, header) pairs and name the headers of a `table` template's fields.
pub(crate) fn listing(
    rows: &[Value],
    columns: &[(&str, &str)],
    id_field: &str,
    quiet: bool,
    format: Option<&str>,
) -> Result<String, String> {
    if quiet {
        return Ok(rows
            .iter()
            .map(|r| {
                format!(
                    "{}\n",
                    r.get(id_field).and_then(Value::as_str).unwrap_or("")
                )
            })
            .collect());
    }
    let format = format.unwrap_or("table").trim();
    if format == "json" {
        return Ok(rows.iter().map(|r| format!("{r}\n")).collect());
    }
    let cell = |r: &Value, f: &str| match r.get(f) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    };
    if format == "table" {
        let header: Vec<&str> = columns.iter().map(|(_, h)| *h).collect();
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|r| columns.iter().map(|(f, _)| cell(r, f)).collect())
            .collect();
        return Ok(table(&header, &body));
    }
    if let Some(tmpl) = format.strip_prefix("table") {
        let tmpl = tmpl.trim().replace("\\t", "\t");
        let parts: Vec<&str> = tmpl.split('\t').collect();
        let headers: Vec<String> = parts
            .iter()
            .map(|p| {
                let field = p
                    .trim()
                    .trim_start_matches("{{")
                    .trim_end_matches("}}")
                    .trim()
                    .trim_start_matches('.');
                columns
                    .iter()
                    .find(|(f, _)| *f == field)
                    .map(|(_, h)| h.to_string())
                    .unwrap_or_else(|| field.to_uppercase())
            })
            .collect();
        let body = rows
            .iter()
            .map(|r| parts.iter().map(|p| template(p, r)).collect())
            .collect::<Result<Vec<Vec<String>>, String>>()?;
        let header: Vec<&str> = headers.iter().map(String::as_str).collect();
        return Ok(table(&header, &body));
    }
    rows.iter()
        .map(|r| template(format, r).map(|s| s + "\n"))
        .collect()
}

/// Re-indent compact JSON with four spaces per level, keeping its key order (Go's
/// `json.Indent`, which `docker inspect` uses on the daemon's bytes). `level` is the
/// indentation of the first line's surroundings.
pub(crate) fn indent_json(raw: &str, level: usize) -> String {
    let pad = |n: usize| "    ".repeat(n);
    let mut out = String::with_capacity(raw.len() * 2);
    let mut depth = level;
    let mut chars = raw.trim().chars().peekable();
    let (mut in_str, mut escaped) = (false, false);
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if let Some(&n) = chars.peek() {
                    if n == '}' || n == ']' {
                        out.push(n);
                        chars.next();
                        continue;
                    }
                }
                depth += 1;
                out.push('\n');
                out.push_str(&pad(depth));
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                out.push('\n');
                out.push_str(&pad(depth));
                out.push(c);
            }
            ',' => {
                out.push_str(",\n");
                out.push_str(&pad(depth));
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// JSON indented with four spaces, as `docker inspect` prints it.
pub(crate) fn pretty_json<T: serde::Serialize>(v: &T) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if v.serialize(&mut ser).is_err() {
        return "null".into();
    }
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_like_docker() {
        let t = table(
            &["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
            &[
                vec![
                    "6e789e6aa1b9".into(),
                    "bridge".into(),
                    "bridge".into(),
                    "local".into(),
                ],
                vec![
                    "06c45d188009".into(),
                    "a-long-network-name".into(),
                    "null".into(),
                    "local".into(),
                ],
            ],
        );
        assert_eq!(
            t,
            "NETWORK ID     NAME                  DRIVER    SCOPE\n\
             6e789e6aa1b9   bridge                bridge    local\n\
             06c45d188009   a-long-network-name   null      local\n"
        );
        assert_eq!(table(&["A", "B"], &[]), "A         B\n");
    }

    #[test]
    fn ids_and_names() {
        assert_eq!(short_id(&"ab".repeat(32), false), "abababababab");
        assert_eq!(short_id("abc", true), "abc");
        let mut v = vec!["net10", "net2", "bridge", "Net1", "net02"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["Net1", "bridge", "net2", "net02", "net10"]);
    }

    #[test]
    fn go_formats() {
        assert_eq!(
            go_time("2026-01-01T00:00:01.000001007Z"),
            "2026-01-01 00:00:01.000001007 +0000 UTC"
        );
        assert_eq!(
            go_time("2026-01-01T00:00:01.500000000Z"),
            "2026-01-01 00:00:01.5 +0000 UTC"
        );
        assert_eq!(
            go_time("2026-01-01T00:00:01.000000000Z"),
            "2026-01-01 00:00:01 +0000 UTC"
        );
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1_234_567), "1.235MB");
        assert_eq!(human_size(12_345_678_901), "12.35GB");
    }

    #[test]
    fn listings() {
        let rows = vec![
            json!({"ID": "abc", "Name": "pets", "Driver": "bridge"}),
            json!({"ID": "def", "Name": "db", "Driver": "null"}),
        ];
        let cols = [("ID", "NETWORK ID"), ("Name", "NAME"), ("Driver", "DRIVER")];
        let l = |q, f| listing(&rows, &cols, "ID", q, f).unwrap();
        assert_eq!(l(true, None), "abc\ndef\n");
        assert_eq!(
            l(false, None),
            "NETWORK ID   NAME      DRIVER\nabc          pets      bridge\ndef          db        null\n"
        );
        assert_eq!(
            l(false, Some("json")),
            "{\"Driver\":\"bridge\",\"ID\":\"abc\",\"Name\":\"pets\"}\n{\"Driver\":\"null\",\"ID\":\"def\",\"Name\":\"db\"}\n"
        );
        assert_eq!(
            l(false, Some("{{.Name}}:{{.Driver}}")),
            "pets:bridge\ndb:null\n"
        );
        assert_eq!(
            l(false, Some("table {{.Name}}\\t{{.ID}}")),
            "NAME      NETWORK ID\npets      abc\ndb        def\n"
        );
    }

    #[test]
    fn json_indent_keeps_order() {
        let raw = r#"{"Name":"p","Id":"x","IPAM":{"Config":[{"Subnet":"a,b:c"}],"Options":{}},"L":[],"E":"q\"}"}"#;
        assert_eq!(
            indent_json(raw, 0),
            "{\n    \"Name\": \"p\",\n    \"Id\": \"x\",\n    \"IPAM\": {\n        \"Config\": [\n            {\n                \"Subnet\": \"a,b:c\"\n            }\n        ],\n        \"Options\": {}\n    },\n    \"L\": [],\n    \"E\": \"q\\\"}\"\n}"
        );
        assert_eq!(indent_json("{}", 1), "{}");
    }

    #[test]
    fn templates() {
        let v =
            json!({"Name": "pets", "IPAM": {"Driver": "default"}, "Labels": {"a": "b"}, "N": 3});
        assert_eq!(
            template("{{.Name}}\\t{{ .IPAM.Driver }}", &v).unwrap(),
            "pets\tdefault"
        );
        assert_eq!(
            template("{{json .Labels}} {{.N}}", &v).unwrap(),
            r#"{"a":"b"} 3"#
        );
        assert_eq!(template("{{.Nope}}", &v).unwrap(), "<no value>");
        assert!(template("{{range .X}}", &v).is_err());
        assert!(template("{{.Name", &v).is_err());
    }
}
