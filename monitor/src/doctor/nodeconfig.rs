//! Checks of a `NodeConfig` document (`node.eks.aws/v1alpha1`), the configuration
//! `nodeadm` reads from user data on Amazon Linux 2023 EKS nodes. Each problem
//! names the YAML path and line, what is wrong and how to fix it.

use base64::Engine as _;

use super::{
    Check, Location, Status,
    yaml::{self, Node},
};

/// The only NodeConfig API version nodeadm accepts.
pub const API_VERSION: &str = "node.eks.aws/v1alpha1";

/// Fields nodeadm knows, per level; other keys are warned about.
const TOP_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const SPEC_FIELDS: &[&str] = &[
    "cluster",
    "kubelet",
    "containerd",
    "instance",
    "featureGates",
];
const CLUSTER_FIELDS: &[&str] = &[
    "name",
    "apiServerEndpoint",
    "certificateAuthority",
    "cidr",
    "enableOutpost",
    "id",
];

/// Checks every document of `text` (from `source`).
pub fn check(source: &str, text: &str) -> Vec<Check> {
    let mut checker = Checker {
        source,
        checks: Vec::new(),
    };
    match yaml::parse(text) {
        Ok(documents) => {
            let configs: Vec<&Node> = documents
                .iter()
                .filter(|d| d.get("kind").and_then(Node::as_str) == Some("NodeConfig"))
                .collect();
            match (configs.as_slice(), documents.first()) {
                ([], Some(first)) if documents.len() == 1 => checker.document(first),
                ([], _) => checker.problem(
                    "nodeconfig.kind",
                    Status::Error,
                    None,
                    None,
                    "no NodeConfig document: nodeadm has nothing to configure the node with",
                    "start the document with `apiVersion: node.eks.aws/v1alpha1` and `kind: NodeConfig`",
                ),
                (configs, _) => configs.iter().for_each(|d| checker.document(d)),
            }
        }
        Err(err) => checker.problem(
            "nodeconfig.yaml",
            Status::Error,
            None,
            Some(err.line),
            &format!("not valid YAML: {}", err.message),
            "fix the syntax (indentation with spaces, `key: value`, closed quotes and brackets)",
        ),
    }
    checker.checks
}

struct Checker<'a> {
    source: &'a str,
    checks: Vec<Check>,
}

impl Checker<'_> {
    fn location(&self, path: Option<&str>, line: Option<usize>) -> Location {
        Location {
            source: self.source.to_owned(),
            path: path.map(str::to_owned),
            line,
        }
    }

    fn problem(
        &mut self,
        id: &'static str,
        status: Status,
        path: Option<&str>,
        line: Option<usize>,
        message: &str,
        fix: &str,
    ) {
        let location = self.location(path, line);
        self.checks
            .push(Check::new(id, status, location, message).fix(fix));
    }

    fn passed(&mut self, id: &'static str, path: &str, node: &Node, message: String) {
        let location = self.location(Some(path), Some(node.line()));
        self.checks
            .push(Check::new(id, Status::Ok, location, message));
    }

    fn document(&mut self, doc: &Node) {
        if !matches!(doc, Node::Mapping { .. }) {
            self.problem(
                "nodeconfig.kind",
                Status::Error,
                None,
                Some(doc.line()),
                &format!("the document is {}, not a NodeConfig mapping", doc.kind()),
                "start the document with `apiVersion: node.eks.aws/v1alpha1` and `kind: NodeConfig`",
            );
            return;
        }
        self.placeholders(doc, &mut Vec::new());
        self.unknown_fields(doc, "", TOP_FIELDS);
        self.api_version(doc);
        self.kind(doc);
        let Some(cluster) = self.required_mapping(doc, "spec").and_then(|spec| {
            self.unknown_fields(spec, "spec.", SPEC_FIELDS);
            self.required_mapping(spec, "cluster")
        }) else {
            return;
        };
        self.unknown_fields(cluster, "spec.cluster.", CLUSTER_FIELDS);
        for field in &CLUSTER_CHECKS {
            self.cluster_field(cluster, field);
        }
    }

    /// `${...}` left by a template that was not rendered.
    fn placeholders(&mut self, node: &Node, path: &mut Vec<String>) {
        match node {
            Node::Scalar { value, line, .. } => {
                if let Some(start) = value.find("${")
                    && value[start..].contains('}')
                {
                    let end = start + value[start..].find('}').unwrap_or(0) + 1;
                    let placeholder = &value[start..end];
                    let joined = path.join(".");
                    self.problem(
                        "nodeconfig.placeholder",
                        Status::Error,
                        Some(&joined),
                        Some(*line),
                        &format!("unrendered template placeholder {placeholder}"),
                        "render the template (Terraform templatefile(), envsubst) before passing the user data",
                    );
                }
            }
            Node::Sequence { items, .. } => {
                for (i, item) in items.iter().enumerate() {
                    path.push(format!("[{i}]"));
                    self.placeholders(item, path);
                    path.pop();
                }
            }
            Node::Mapping { entries, .. } => {
                for (key, _, value) in entries {
                    path.push(key.clone());
                    self.placeholders(value, path);
                    path.pop();
                }
            }
            Node::Alias { .. } => {}
        }
    }

    fn unknown_fields(&mut self, node: &Node, prefix: &str, known: &[&str]) {
        let Node::Mapping { entries, .. } = node else {
            return;
        };
        for (key, line, _) in entries {
            if !known.contains(&key.as_str()) {
                let hint = known
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(key))
                    .map_or_else(
                        || format!("remove it; known fields here: {}", known.join(", ")),
                        |k| format!("did you mean `{k}`? Field names are case-sensitive"),
                    );
                self.problem(
                    "nodeconfig.unknown_field",
                    Status::Warning,
                    Some(&format!("{prefix}{key}")),
                    Some(*line),
                    &format!("unknown field `{key}`: nodeadm ignores or rejects it"),
                    &hint,
                );
            }
        }
    }

    fn api_version(&mut self, doc: &Node) {
        match doc.get("apiVersion") {
            Some(node) if node.as_str() == Some(API_VERSION) => self.passed(
                "nodeconfig.api_version",
                "apiVersion",
                node,
                format!("apiVersion is {API_VERSION}"),
            ),
            Some(node) => self.problem(
                "nodeconfig.api_version",
                Status::Error,
                Some("apiVersion"),
                Some(node.line()),
                &format!(
                    "apiVersion is {}, not {API_VERSION}",
                    node.as_str().unwrap_or(node.kind())
                ),
                &format!("set `apiVersion: {API_VERSION}`"),
            ),
            None => self.problem(
                "nodeconfig.api_version",
                Status::Error,
                Some("apiVersion"),
                Some(doc.line()),
                "apiVersion is missing",
                &format!("add `apiVersion: {API_VERSION}`"),
            ),
        }
    }

    fn kind(&mut self, doc: &Node) {
        match doc.get("kind") {
            Some(node) if node.as_str() == Some("NodeConfig") => {}
            other => self.problem(
                "nodeconfig.kind",
                Status::Error,
                Some("kind"),
                Some(other.unwrap_or(doc).line()),
                &format!(
                    "kind is {}, not NodeConfig",
                    other.and_then(Node::as_str).unwrap_or("missing")
                ),
                "set `kind: NodeConfig`",
            ),
        }
    }

    /// The mapping under `key`, or an error saying it is missing or not a mapping.
    fn required_mapping<'n>(&mut self, parent: &'n Node, key: &str) -> Option<&'n Node> {
        let path = match key {
            "spec" => "spec",
            _ => "spec.cluster",
        };
        match parent.get(key) {
            Some(node @ Node::Mapping { .. }) => Some(node),
            Some(node) => {
                self.problem(
                    "nodeconfig.structure",
                    Status::Error,
                    Some(path),
                    Some(node.line()),
                    &format!("{path} is {}, not a mapping", node.kind()),
                    &format!("indent the fields of {path} under it"),
                );
                None
            }
            None => {
                self.problem(
                    "nodeconfig.structure",
                    Status::Error,
                    Some(path),
                    Some(parent.line()),
                    &format!("{path} is missing: nodeadm needs the cluster's name, API endpoint, CA and service CIDR"),
                    &format!("add {path} with name, apiServerEndpoint, certificateAuthority and cidr"),
                );
                None
            }
        }
    }

    /// The non-empty scalar at `spec.cluster.<key>`, or an error under `id`.
    fn required_scalar<'n>(
        &mut self,
        cluster: &'n Node,
        id: &'static str,
        key: &str,
        what: &str,
    ) -> Option<(&'n Node, &'n str)> {
        let path = format!("spec.cluster.{key}");
        match cluster.get(key) {
            Some(node) => match node.as_str().map(str::trim) {
                Some(value) if !value.is_empty() => Some((node, value)),
                _ => {
                    self.problem(
                        "nodeconfig.structure",
                        Status::Error,
                        Some(&path),
                        Some(node.line()),
                        &format!("{path} is empty or not a value"),
                        &format!("set it to {what}"),
                    );
                    None
                }
            },
            None => {
                self.problem(
                    id,
                    Status::Error,
                    Some(&path),
                    Some(cluster.line()),
                    &format!("{path} is missing; nodeadm-config.service fails without it"),
                    &format!("add `{key}:` with {what}"),
                );
                None
            }
        }
    }

    /// Checks one required field of `spec.cluster` with its validator.
    fn cluster_field(&mut self, cluster: &Node, field: &ClusterField) {
        let Some((node, value)) = self.required_scalar(cluster, field.id, field.key, field.what)
        else {
            return;
        };
        let path = format!("spec.cluster.{}", field.key);
        match (field.validate)(value) {
            Verdict::Fine(message) => self.passed(field.id, &path, node, message),
            Verdict::Problem(status, message, fix) => self.problem(
                field.id,
                status,
                Some(&path),
                Some(node.line()),
                &message,
                &fix,
            ),
        }
    }
}

/// What a field's value is worth: passed (with what was found), or a problem with
/// its status, message and remediation.
enum Verdict {
    Fine(String),
    Problem(Status, String, String),
}

/// A required field of `spec.cluster`.
struct ClusterField {
    id: &'static str,
    key: &'static str,
    /// What the value should be, for "add it" remediations.
    what: &'static str,
    validate: fn(&str) -> Verdict,
}

const CLUSTER_CHECKS: [ClusterField; 4] = [
    ClusterField {
        id: "nodeconfig.name",
        key: "name",
        what: "the EKS cluster's name",
        validate: |name| Verdict::Fine(format!("cluster {name}")),
    },
    ClusterField {
        id: "nodeconfig.api_server_endpoint",
        key: "apiServerEndpoint",
        what: "the cluster's https endpoint",
        validate: endpoint,
    },
    ClusterField {
        id: "nodeconfig.certificate_authority",
        key: "certificateAuthority",
        what: "the base64 CA data of the cluster",
        validate: |value| match certificate_problem(value) {
            None => Verdict::Fine("base64 of a PEM certificate".into()),
            Some(problem) => Verdict::Problem(
                Status::Error,
                problem,
                "use `aws eks describe-cluster --query cluster.certificateAuthority.data` as is \
                 (already base64)"
                    .into(),
            ),
        },
    },
    ClusterField {
        id: "nodeconfig.cidr",
        key: "cidr",
        what: "the cluster's service CIDR (e.g. 10.100.0.0/16)",
        validate: cidr,
    },
];

/// `apiServerEndpoint`: an https URL with a host.
fn endpoint(value: &str) -> Verdict {
    let fix = "use the https:// endpoint from `aws eks describe-cluster --query cluster.endpoint`";
    match url::Url::parse(value) {
        Ok(url) if url.scheme() == "https" && url.host_str().is_some_and(|h| !h.is_empty()) => {
            Verdict::Fine(format!("endpoint {url}"))
        }
        Ok(url) => Verdict::Problem(
            Status::Error,
            format!(
                "{value} is a {} URL; the API server is reached over https",
                url.scheme()
            ),
            fix.into(),
        ),
        Err(err) => Verdict::Problem(
            Status::Error,
            format!("{value:?} is not a URL: {err}"),
            fix.into(),
        ),
    }
}

/// `cidr`: a network in CIDR notation, host bits clear.
fn cidr(value: &str) -> Verdict {
    match value.parse::<ipnet::IpNet>() {
        Ok(net) if net.trunc() == net => Verdict::Fine(format!("service CIDR {net}")),
        Ok(net) => Verdict::Problem(
            Status::Warning,
            format!("{value} has host bits set"),
            format!("write the network address, {}", net.trunc()),
        ),
        Err(_) => Verdict::Problem(
            Status::Error,
            format!("{value:?} is not a CIDR (address/prefix length)"),
            "use the cluster's service CIDR: `aws eks describe-cluster --query \
             cluster.kubernetesNetworkConfig.serviceIpv4Cidr`"
                .into(),
        ),
    }
}

/// What is wrong with a `certificateAuthority` value (base64 of a PEM certificate).
fn certificate_problem(value: &str) -> Option<String> {
    let engine = base64::engine::general_purpose::STANDARD;
    let compact: String = value.split_whitespace().collect();
    if compact.contains("-----BEGIN") {
        return Some("a PEM certificate where base64 of the PEM is expected".into());
    }
    let Ok(pem) = engine.decode(&compact) else {
        return Some("not valid base64".into());
    };
    let Ok(pem) = String::from_utf8(pem) else {
        return Some("decodes to binary data, not a PEM certificate".into());
    };
    let body = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|rest| {
            rest.split("-----END CERTIFICATE-----")
                .next()
                .filter(|_| rest.contains("-----END CERTIFICATE-----"))
        });
    let Some(body) = body else {
        return Some("decodes to text without a BEGIN/END CERTIFICATE block".into());
    };
    let body: String = body.split_whitespace().collect();
    match engine.decode(body) {
        // A DER certificate is an ASN.1 SEQUENCE.
        Ok(der) if der.first() == Some(&0x30) && der.len() > 64 => None,
        _ => Some("the PEM block does not hold a DER certificate".into()),
    }
}
