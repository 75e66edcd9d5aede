//! Content negotiation: the exposition format (`Accept`) and gzip
//! (`Accept-Encoding`).

use std::io::Write as _;

use flate2::{Compression, write::GzEncoder};

use crate::watch::metrics::Format;

/// The media ranges or codings of an `Accept`-style header with their weights
/// (`q`, 1 when absent), lower-cased, parameters other than `q` kept in the name.
fn weighted(header: &str) -> impl Iterator<Item = (String, f32)> + '_ {
    header.split(',').filter_map(|item| {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next()?.to_ascii_lowercase();
        if name.is_empty() {
            return None;
        }
        let mut q = 1.0;
        let mut params = Vec::new();
        for param in parts {
            match param.split_once('=') {
                Some((key, value)) if key.trim().eq_ignore_ascii_case("q") => {
                    q = value.trim().parse().unwrap_or(0.0);
                }
                _ => params.push(param.to_ascii_lowercase()),
            }
        }
        let name = if params.is_empty() {
            name
        } else {
            format!("{name};{}", params.join(";"))
        };
        Some((name, q))
    })
}

/// The format the client prefers: OpenMetrics 1.0.0 when it asks for
/// `application/openmetrics-text` (without a version or with 1.0.0 or 0.0.1, which
/// share the text syntax routemon writes) at least as much as for the Prometheus
/// text format; the Prometheus text format otherwise.
pub fn format(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Prometheus;
    };
    let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
    for (range, q) in weighted(accept) {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default();
        let version = parts.find_map(|p| p.strip_prefix("version="));
        match media {
            "application/openmetrics-text"
                if version.is_none_or(|v| matches!(v, "1.0.0" | "0.0.1")) =>
            {
                openmetrics = openmetrics.max(q);
            }
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    }
}

/// Whether the client accepts a gzip-coded body: `gzip`, `x-gzip` or `*` with a
/// non-zero weight, unless `gzip` itself is refused with `q=0`.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(header) = accept_encoding else {
        return false;
    };
    let mut gzip = None;
    let mut any = None;
    for (coding, q) in weighted(header) {
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip = Some(gzip.unwrap_or(0.0f32).max(q)),
            "*" => any = Some(q),
            _ => {}
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

/// `body` gzip-coded (level 1: the exposition is repetitive text, and the daemon
/// compresses on its single thread).
pub fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 8), Compression::fast());
    encoder.write_all(body)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    /// What Prometheus 2.x and 3.x send.
    const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;q=0.5,\
        application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

    #[test]
    fn openmetrics_only_when_preferred() {
        assert_eq!(format(None), Format::Prometheus);
        assert_eq!(format(Some("*/*")), Format::Prometheus);
        assert_eq!(format(Some(PROMETHEUS_ACCEPT)), Format::OpenMetrics);
        assert_eq!(
            format(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(
            format(Some("application/openmetrics-text;version=2.0.0")),
            Format::Prometheus
        );
        assert_eq!(
            format(Some(
                "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"
            )),
            Format::Prometheus
        );
        assert_eq!(
            format(Some("application/openmetrics-text;q=0")),
            Format::Prometheus
        );
    }

    #[test]
    fn gzip_when_allowed() {
        assert!(!accepts_gzip(None));
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(Some("*")));
        assert!(!accepts_gzip(Some("gzip;q=0, *")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(Some("br")));
    }

    #[test]
    fn gzip_round_trips() {
        let body = "routemon_build_info{version=\"0.1.0\"} 1\n".repeat(100);
        let coded = gzip(body.as_bytes()).unwrap();
        assert!(coded.len() < body.len() / 4);
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(coded.as_slice())
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded, body);
    }
}
