//! EC2 user data as nodes receive it: a raw `NodeConfig` YAML document, a MIME
//! multipart message whose `application/node.eks.aws` parts carry NodeConfig (the
//! form of EKS managed node groups and the Terraform EKS module), either of them
//! base64-encoded. Decoding never panics and never holds more than a bounded
//! amount of input.

use base64::Engine as _;

use super::{Check, Location, Status, nodeconfig};

/// Largest input read. EC2 caps user data at 16 KiB before base64; this leaves
/// room for hand-made files without letting a huge one through.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;

/// The MIME type of NodeConfig parts.
pub const NODECONFIG_MIME: &str = "application/node.eks.aws";

/// MIME parts examined at most (a message with more is refused).
const MAX_PARTS: usize = 64;

/// Checks user data: decodes it and checks every NodeConfig document in it.
pub fn check(source: &str, input: &[u8]) -> Vec<Check> {
    let at = |path: Option<&str>| Location {
        source: source.to_owned(),
        path: path.map(str::to_owned),
        line: None,
    };
    let mut checks = Vec::new();
    if input.len() > MAX_INPUT_BYTES {
        checks.push(
            Check::new(
                "userdata.size",
                Status::Error,
                at(None),
                format!(
                    "{} bytes is more than routemon reads ({MAX_INPUT_BYTES}); EC2 accepts at \
                     most 16 KiB of user data",
                    input.len()
                ),
            )
            .fix("pass the user data the node receives, not another file"),
        );
        return checks;
    }
    let mut data = input.to_vec();
    if let Some(decoded) = decode_base64(&data) {
        checks.push(Check::new(
            "userdata.encoding",
            Status::Info,
            at(None),
            "base64-encoded input; checked after decoding",
        ));
        data = decoded;
    }
    if data.starts_with(&[0x1f, 0x8b]) {
        checks.push(
            Check::new(
                "userdata.encoding",
                Status::Error,
                at(None),
                "gzip-compressed user data: nodeadm reads NodeConfig from plain or MIME user data",
            )
            .fix("store the user data uncompressed"),
        );
        return checks;
    }
    if is_mime(&data) {
        checks.extend(check_mime(source, &data));
    } else {
        checks.extend(check_text(&at(None), &data));
    }
    checks
}

/// Decodes `data` when it is entirely base64 (whitespace allowed) and decodes to
/// something that is not itself base64 text, else `None`.
fn decode_base64(data: &[u8]) -> Option<Vec<u8>> {
    let compact: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    // A bare word such as a cluster name is valid base64 too; real encoded user
    // data is long and has no YAML or MIME punctuation.
    if compact.len() < 16
        || !compact
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .ok()
}

/// Whether the data starts like a MIME message (headers before a blank line).
fn is_mime(data: &[u8]) -> bool {
    let head = &data[..data.len().min(4096)];
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    head.starts_with("mime-version:") || head.starts_with("content-type:")
}

/// Checks a MIME multipart message part by part.
fn check_mime(source: &str, data: &[u8]) -> Vec<Check> {
    let at = |path: String| Location {
        source: source.to_owned(),
        path: Some(path),
        line: None,
    };
    let mut checks = Vec::new();
    let mail = match mailparse::parse_mail(data) {
        Ok(mail) => mail,
        Err(err) => {
            checks.push(
                Check::new(
                    "userdata.mime",
                    Status::Error,
                    at("MIME".into()),
                    format!("not a valid MIME message: {err}"),
                )
                .fix("check the boundary and the part headers; cloud-init and nodeadm read the same format"),
            );
            return checks;
        }
    };
    if !mail.ctype.mimetype.starts_with("multipart/") {
        checks.push(
            Check::new(
                "userdata.mime",
                Status::Error,
                at("Content-Type".into()),
                format!(
                    "MIME user data of type {}, not multipart",
                    mail.ctype.mimetype
                ),
            )
            .fix("use Content-Type: multipart/mixed with a boundary, one part per document"),
        );
        return checks;
    }
    if !terminated(data, mail.ctype.params.get("boundary").map(String::as_str)) {
        checks.push(
            Check::new(
                "userdata.mime",
                Status::Error,
                at("MIME".into()),
                "the multipart message is truncated: its closing boundary (--BOUNDARY--) is missing",
            )
            .fix("end the message with the closing boundary line"),
        );
    }
    if mail.subparts.len() > MAX_PARTS {
        checks.push(Check::new(
            "userdata.mime",
            Status::Error,
            at("MIME".into()),
            format!(
                "{} parts; routemon checks at most {MAX_PARTS}",
                mail.subparts.len()
            ),
        ));
        return checks;
    }
    let mut nodeconfigs = 0;
    for (index, part) in mail.subparts.iter().enumerate() {
        let name = format!("part {}", index + 1);
        let mimetype = part.ctype.mimetype.as_str();
        if mimetype != NODECONFIG_MIME {
            checks.push(Check::new(
                "userdata.part",
                Status::Info,
                at(name),
                format!("{mimetype} part skipped (not NodeConfig)"),
            ));
            continue;
        }
        nodeconfigs += 1;
        match part.get_body_raw() {
            Ok(body) => checks.extend(check_text(
                &Location {
                    source: format!("{source} {name}"),
                    path: None,
                    line: None,
                },
                &body,
            )),
            Err(err) => checks.push(
                Check::new(
                    "userdata.part",
                    Status::Error,
                    at(name),
                    format!("the part's body cannot be decoded: {err}"),
                )
                .fix("check its Content-Transfer-Encoding"),
            ),
        }
    }
    if nodeconfigs == 0 {
        checks.push(
            Check::new(
                "userdata.nodeconfig",
                Status::Error,
                at("MIME".into()),
                format!("no {NODECONFIG_MIME} part: nodeadm finds no NodeConfig and the node never joins"),
            )
            .fix(format!("add a part with Content-Type: {NODECONFIG_MIME} holding the NodeConfig")),
        );
    }
    checks
}

/// Whether the closing `--boundary--` line is present.
fn terminated(data: &[u8], boundary: Option<&str>) -> bool {
    let Some(boundary) = boundary else {
        return false;
    };
    let closing = format!("--{boundary}--");
    data.windows(closing.len()).any(|w| w == closing.as_bytes())
}

/// Checks a NodeConfig document given as bytes.
fn check_text(at: &Location, data: &[u8]) -> Vec<Check> {
    match std::str::from_utf8(data) {
        Ok(text) => nodeconfig::check(&at.source, text),
        Err(err) => vec![
            Check::new(
                "userdata.text",
                Status::Error,
                at.clone(),
                format!(
                    "not text: invalid UTF-8 at byte {} (binary data, or an encoding nodeadm \
                     does not read)",
                    err.valid_up_to()
                ),
            )
            .fix("NodeConfig is UTF-8 YAML; base64 and MIME wrappers are decoded here"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_words_are_not_base64() {
        assert!(decode_base64(b"cluster").is_none());
        assert!(decode_base64(b"apiVersion: x").is_none());
        let encoded = base64::engine::general_purpose::STANDARD.encode("kind: NodeConfig\n");
        assert_eq!(
            decode_base64(encoded.as_bytes()).unwrap(),
            b"kind: NodeConfig\n"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let checks = check("x", &garbage);
        assert!(checks.iter().any(|c| c.status == Status::Error));
        let huge = vec![b'a'; MAX_INPUT_BYTES + 1];
        assert_eq!(check("x", &huge)[0].id, "userdata.size");
    }
}
