//! `--web-config-file`: TLS, client certificates and basic authentication for the
//! metrics endpoint, in the file format of the Prometheus exporter toolkit
//! (`web-config.yml`, as node_exporter's `--web.config.file` reads it), so one
//! file serves every exporter of a node.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # with client_ca_file: mTLS
//!   client_ca_file: ca.crt
//!   min_version: TLS12
//! basic_auth_users:
//!   prometheus: $2y$10$…            # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! Keys routemon does not implement are refused, never ignored: a file that asks
//! for a protection routemon cannot give must not silently serve without it.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    hash::{BuildHasher as _, RandomState},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use rustls::{
    RootCertStore, ServerConfig,
    server::WebPkiClientVerifier,
    version::{TLS12, TLS13},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use thiserror::Error;
use yaml_rust2::{Yaml, YamlLoader};

/// Largest web configuration file read.
const MAX_FILE_BYTES: u64 = 64 * 1024;
/// Credentials remembered as checked (bcrypt is slow on purpose; Prometheus sends
/// the same header on every scrape).
const CHECKED_CREDENTIALS: usize = 64;

/// A web configuration file that cannot be used.
#[derive(Debug, Error)]
pub enum WebConfigError {
    /// The file, or a file it names, cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what the exporter toolkit's format allows.
    #[error("{path}: {message}")]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        message: String,
    },
}

/// Which client certificates the server asks for (exporter toolkit's
/// `client_auth_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate (the default).
    None,
    /// A certificate signed by `client_ca_file` if the client sends one.
    VerifyIfGiven,
    /// A certificate signed by `client_ca_file`, always.
    RequireAndVerify,
}

/// The endpoint's access control, loaded from a web configuration file.
#[derive(Debug)]
pub struct WebConfig {
    /// TLS, when `tls_server_config` is set.
    pub tls: Option<Arc<ServerConfig>>,
    /// How client certificates are checked.
    pub client_auth: ClientAuth,
    /// Basic-auth users and their bcrypt hashes; empty: no authentication.
    users: BTreeMap<String, String>,
    /// Authorization headers already checked, by a keyed hash of the header, with
    /// the outcome.
    checked: Mutex<HashMap<u64, bool>>,
    hasher: RandomState,
}

impl WebConfig {
    /// Loads and checks `path`: certificates and keys are read now, so a broken
    /// file stops routemon at start, not at the first scrape.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let invalid = |message: String| WebConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let text = read_bounded(path)?;
        let docs =
            YamlLoader::load_from_str(&text).map_err(|err| invalid(format!("not YAML: {err}")))?;
        let root = match docs.as_slice() {
            [] => Yaml::Hash(Default::default()),
            [doc] => doc.clone(),
            _ => return Err(invalid("one YAML document expected".into())),
        };
        let root = mapping(&root, "the file").map_err(&invalid)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut tls = None;
        let mut client_auth = ClientAuth::None;
        let mut users = BTreeMap::new();
        for (key, value) in root {
            match key.as_str() {
                "tls_server_config" => {
                    let (config, auth) = tls_config(value, base).map_err(&invalid)?;
                    tls = Some(Arc::new(config));
                    client_auth = auth;
                }
                "basic_auth_users" => users = basic_auth_users(value).map_err(&invalid)?,
                other => {
                    return Err(invalid(format!(
                        "'{other}' is not supported by routemon (it implements \
                         tls_server_config and basic_auth_users); remove it"
                    )));
                }
            }
        }
        Ok(Self {
            tls,
            client_auth,
            users,
            checked: Mutex::new(HashMap::new()),
            hasher: RandomState::new(),
        })
    }

    /// Whether requests must carry basic-auth credentials.
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether an `Authorization` header value lets the request in. Without users
    /// every request does. Runs bcrypt for credentials not seen before: call it
    /// off the async threads.
    pub fn authorize(&self, header: Option<&str>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some(header) = header else {
            return false;
        };
        let key = self.hasher.hash_one(header);
        if let Some(known) = self.checked.lock().ok().and_then(|c| c.get(&key).copied()) {
            return known;
        }
        let allowed = self.check_credentials(header);
        if let Ok(mut checked) = self.checked.lock() {
            if checked.len() >= CHECKED_CREDENTIALS {
                checked.clear();
            }
            checked.insert(key, allowed);
        }
        allowed
    }

    /// Whether a checked header's outcome is remembered (no bcrypt needed).
    pub fn knows(&self, header: Option<&str>) -> Option<bool> {
        if self.users.is_empty() {
            return Some(true);
        }
        let key = self.hasher.hash_one(header?);
        self.checked.lock().ok()?.get(&key).copied()
    }

    fn check_credentials(&self, header: &str) -> bool {
        let Some(encoded) = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return false;
        };
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                // The same work as for a known user, so timing does not tell
                // which users exist.
                if let Some(hash) = self.users.values().next() {
                    let _ = bcrypt::verify(password, hash);
                }
                false
            }
        }
    }
}

fn read_bounded(path: &Path) -> Result<String, WebConfigError> {
    let read = |source| WebConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = fs::metadata(path).map_err(read)?;
    if metadata.len() > MAX_FILE_BYTES {
        return Err(WebConfigError::Invalid {
            path: path.to_owned(),
            message: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    fs::read_to_string(path).map_err(read)
}

fn mapping<'a>(value: &'a Yaml, what: &str) -> Result<Vec<(String, &'a Yaml)>, String> {
    match value {
        Yaml::Hash(hash) => hash
            .iter()
            .map(|(k, v)| match k {
                Yaml::String(key) => Ok((key.clone(), v)),
                other => Err(format!("{what}: key {other:?} is not a string")),
            })
            .collect(),
        Yaml::Null => Ok(Vec::new()),
        _ => Err(format!("{what} must be a mapping")),
    }
}

fn string(value: &Yaml, key: &str) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{key} must be a string"))
}

fn basic_auth_users(value: &Yaml) -> Result<BTreeMap<String, String>, String> {
    let mut users = BTreeMap::new();
    for (user, hash) in mapping(value, "basic_auth_users")? {
        let hash = string(hash, &format!("basic_auth_users.{user}"))?;
        // Refuse what bcrypt cannot check now, not at the first scrape.
        bcrypt::verify("", &hash).map_err(|err| {
            format!(
                "basic_auth_users.{user} is not a bcrypt hash ({err}); make one with \
                 `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
            )
        })?;
        if user.contains(':') {
            return Err(format!("basic_auth_users: user '{user}' contains ':'"));
        }
        users.insert(user, hash);
    }
    Ok(users)
}

fn tls_config(value: &Yaml, base: &Path) -> Result<(ServerConfig, ClientAuth), String> {
    let mut cert_file = None;
    let mut key_file = None;
    let mut client_ca_file = None;
    let mut client_auth = "NoClientCert".to_owned();
    let mut min_version = "TLS12".to_owned();
    for (key, value) in mapping(value, "tls_server_config")? {
        let text = string(value, &format!("tls_server_config.{key}"))?;
        match key.as_str() {
            "cert_file" => cert_file = Some(base.join(text)),
            "key_file" => key_file = Some(base.join(text)),
            "client_ca_file" => client_ca_file = Some(base.join(text)),
            "client_auth_type" => client_auth = text,
            "min_version" => min_version = text,
            other => {
                return Err(format!(
                    "tls_server_config.{other} is not supported by routemon (it implements \
                     cert_file, key_file, client_ca_file, client_auth_type, min_version)"
                ));
            }
        }
    }
    let cert_file = cert_file.ok_or("tls_server_config needs cert_file")?;
    let key_file = key_file.ok_or("tls_server_config needs key_file")?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version.as_str() {
        "TLS12" => &[&TLS13, &TLS12],
        "TLS13" => &[&TLS13],
        other => {
            return Err(format!(
                "tls_server_config.min_version {other}: use TLS12 or TLS13"
            ));
        }
    };
    let auth = match client_auth.as_str() {
        "NoClientCert" => ClientAuth::None,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type {other} is not supported: use \
                 NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ));
        }
    };
    let certs = CertificateDer::pem_file_iter(&cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("cert_file {}: {err}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "cert_file {} holds no certificate",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .map_err(|err| format!("key_file {}: {err}", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|err| format!("TLS versions: {err}"))?;
    let builder = match (auth, &client_ca_file) {
        (ClientAuth::None, None) => builder.with_no_client_auth(),
        (ClientAuth::None, Some(_)) => {
            return Err(
                "client_ca_file is set but client_auth_type is NoClientCert: set \
                 client_auth_type to RequireAndVerifyClientCert (or remove client_ca_file)"
                    .into(),
            );
        }
        (_, None) => {
            return Err(format!(
                "client_auth_type {client_auth} needs client_ca_file"
            ));
        }
        (_, Some(ca_file)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca_file)
                .map_err(|err| format!("client_ca_file {}: {err}", ca_file.display()))?
            {
                let cert =
                    cert.map_err(|err| format!("client_ca_file {}: {err}", ca_file.display()))?;
                roots
                    .add(cert)
                    .map_err(|err| format!("client_ca_file {}: {err}", ca_file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::VerifyIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|err| format!("client_ca_file {}: {err}", ca_file.display()))?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|err| format!("cert_file/key_file: {err}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, auth))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("routemon-web-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_cert(dir: &Path) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        fs::write(dir.join("server.crt"), cert.cert.pem()).unwrap();
        fs::write(dir.join("server.key"), cert.key_pair.serialize_pem()).unwrap();
    }

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn tls_and_basic_auth_load_and_check_credentials() {
        let dir = dir("ok");
        write_cert(&dir);
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let path = dir.join("web.yml");
        fs::write(
            &path,
            format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
                 basic_auth_users:\n  prometheus: {hash}\n"
            ),
        )
        .unwrap();
        let config = WebConfig::load(&path).unwrap();
        assert!(config.tls.is_some());
        assert!(config.requires_auth());
        assert!(config.authorize(Some(&basic("prometheus", "s3cret"))));
        assert_eq!(
            config.knows(Some(&basic("prometheus", "s3cret"))),
            Some(true)
        );
        assert!(!config.authorize(Some(&basic("prometheus", "wrong"))));
        assert!(!config.authorize(Some(&basic("nobody", "s3cret"))));
        assert!(!config.authorize(Some("Bearer x")));
        assert!(!config.authorize(None));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn what_routemon_cannot_honour_is_refused_with_the_reason() {
        let dir = dir("bad");
        write_cert(&dir);
        let cases = [
            (
                "http_server_config:\n  http2: false\n",
                "'http_server_config' is not supported",
            ),
            (
                "basic_auth_users:\n  a: plaintext\n",
                "is not a bcrypt hash",
            ),
            (
                "tls_server_config:\n  cert_file: server.crt\n",
                "needs key_file",
            ),
            (
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                 client_auth_type: RequireAndVerifyClientCert\n",
                "needs client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n",
                "cert_file",
            ),
            (
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                 min_version: SSL3\n",
                "use TLS12 or TLS13",
            ),
            ("- a list\n", "must be a mapping"),
        ];
        for (text, needle) in cases {
            let path = dir.join("web.yml");
            fs::write(&path, text).unwrap();
            let err = WebConfig::load(&path).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn an_empty_file_protects_nothing() {
        let dir = dir("empty");
        let path = dir.join("web.yml");
        fs::write(&path, "").unwrap();
        let config = WebConfig::load(&path).unwrap();
        assert!(config.tls.is_none() && !config.requires_auth());
        assert!(config.authorize(None));
        let _ = fs::remove_dir_all(dir);
    }
}
