//! systemd-networkd configuration: which `.network` file configures a link, and
//! the files routemon writes to pin a metric or to leave interfaces unmanaged.
//!
//! networkd reads `*.network` from `/etc`, `/run`, `/usr/local/lib` and `/usr/lib`
//! (`…/systemd/network`); a file in an earlier directory masks one with the same
//! name in a later one, and a link is configured by the first file, in file-name
//! order across all directories, whose `[Match]` section matches it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use glob::Pattern;

/// The first line of every file routemon writes; how it recognises its own files.
pub const HEADER_MARK: &str = "# Written by routemon";

/// networkd's configuration directories, highest precedence first.
pub const STANDARD_DIRS: [&str; 4] = [
    "/etc/systemd/network",
    "/run/systemd/network",
    "/usr/local/lib/systemd/network",
    "/usr/lib/systemd/network",
];

/// Where networkd records, per link, the file it configured the link with.
const LINK_STATE_DIR: &str = "/run/systemd/netif/links";

/// One `key=value` assignment of a unit file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Section name without brackets, e.g. `DHCPv4`.
    pub section: String,
    /// Key.
    pub key: String,
    /// Value, trimmed.
    pub value: String,
}

/// Parses the assignments of a systemd unit file (sections, `key=value`, comments
/// starting with `#` or `;`, lines continued with a trailing backslash).
pub fn assignments(content: &str) -> Vec<Assignment> {
    let mut out = Vec::new();
    let mut section = String::new();
    for line in logical_lines(content) {
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            out.push(Assignment {
                section: section.clone(),
                key: key.trim().to_owned(),
                value: value.trim().to_owned(),
            });
        }
    }
    out
}

/// Joins backslash-continued lines.
fn logical_lines(content: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in content.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
        } else {
            pending.push_str(line);
            lines.push(std::mem::take(&mut pending));
        }
    }
    if !pending.is_empty() {
        lines.push(pending);
    }
    lines
}

/// What networkd's `[Match]` keys look at, for one link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkFacts {
    /// Interface name.
    pub name: String,
    /// MAC address, lower case.
    pub mac: Option<String>,
    /// `IFLA_INFO_KIND` (`veth`, …).
    pub kind: Option<String>,
    /// Driver name from sysfs.
    pub driver: Option<String>,
    /// `ether`, `loopback`, `none`, …
    pub link_type: String,
}

impl LinkFacts {
    /// Facts about a link of the model; the driver comes from sysfs.
    pub fn of(link: &crate::model::Link) -> Self {
        use crate::model::LinkLayer;
        let driver = fs::read_link(format!("/sys/class/net/{}/device/driver", link.name))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .or_else(|| link.kind.clone());
        Self {
            name: link.name.clone(),
            mac: link.mac.as_ref().map(|m| m.to_ascii_lowercase()),
            kind: link.kind.clone(),
            driver,
            link_type: match link.link_layer {
                LinkLayer::Ethernet => "ether",
                LinkLayer::Loopback => "loopback",
                LinkLayer::None => "none",
                LinkLayer::Other(_) => "other",
            }
            .to_owned(),
        }
    }
}

/// Whether a space-separated list of globs (optionally negated with a leading `!`)
/// matches `value`.
fn list_matches(list: &str, value: Option<&str>, case_insensitive: bool) -> bool {
    let (negated, list) = match list.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, list),
    };
    let hit = value.is_some_and(|value| {
        list.split_whitespace().any(|item| {
            if case_insensitive {
                item.eq_ignore_ascii_case(value)
            } else {
                Pattern::new(item).is_ok_and(|p| p.matches(value))
            }
        })
    });
    hit != negated
}

/// Whether the `[Match]` section of `content` matches the link. Keys routemon does
/// not evaluate (`Host=`, `Virtualization=`, `Path=`, …) are treated as matching.
pub fn matches(content: &str, link: &LinkFacts) -> bool {
    let mut lists: Vec<(String, String)> = Vec::new();
    for a in assignments(content)
        .into_iter()
        .filter(|a| a.section == "Match")
    {
        // An empty assignment resets the list; repeated ones extend it.
        if a.value.is_empty() {
            lists.retain(|(key, _)| key != &a.key);
        } else if let Some((_, list)) = lists.iter_mut().find(|(key, _)| key == &a.key) {
            list.push(' ');
            list.push_str(&a.value);
        } else {
            lists.push((a.key, a.value));
        }
    }
    lists.iter().all(|(key, list)| match key.as_str() {
        "Name" | "OriginalName" => list_matches(list, Some(&link.name), false),
        "MACAddress" | "PermanentMACAddress" => list_matches(list, link.mac.as_deref(), true),
        "Type" => list_matches(list, Some(&link.link_type), false),
        "Kind" => list_matches(list, link.kind.as_deref(), false),
        "Driver" => list_matches(list, link.driver.as_deref(), false),
        other => {
            tracing::debug!("[Match] {other}= is not evaluated; assuming it matches");
            true
        }
    })
}

/// A configuration file on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its content.
    pub content: String,
}

impl ConfigFile {
    /// Whether routemon wrote it.
    pub fn written_by_routemon(&self) -> bool {
        is_routemon_file(&self.content)
    }

    /// Its file name.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Whether a file's content starts with routemon's header.
pub fn is_routemon_file(content: &str) -> bool {
    content.starts_with(HEADER_MARK)
}

/// networkd's configuration as it is on disk.
#[derive(Clone, Debug)]
pub struct NetworkdConfig {
    /// Directories searched, highest precedence first.
    pub dirs: Vec<PathBuf>,
    /// Effective `.network` files (masked ones removed), in the order networkd
    /// tries them.
    pub files: Vec<ConfigFile>,
}

impl NetworkdConfig {
    /// Reads the `.network` files of networkd's directories, with `write_dir` (where
    /// routemon writes) searched first when it is not one of them.
    pub fn load(write_dir: &Path) -> std::io::Result<Self> {
        let mut dirs: Vec<PathBuf> = STANDARD_DIRS.iter().map(PathBuf::from).collect();
        if !dirs.iter().any(|d| d == write_dir) {
            dirs.insert(0, write_dir.to_path_buf());
        }
        Self::from_dirs(dirs)
    }

    /// Reads the `.network` files of `dirs`, highest precedence first, with
    /// networkd's rules (a file masks same-named ones in later directories, a
    /// symlink to /dev/null masks without configuring).
    pub fn from_dirs(dirs: Vec<PathBuf>) -> std::io::Result<Self> {
        let mut files: Vec<ConfigFile> = Vec::new();
        for dir in &dirs {
            for (path, name) in dir_entries(dir, ".network")? {
                if files.iter().any(|f| f.file_name() == name) {
                    continue; // masked by a directory of higher precedence
                }
                let masked = fs::read_link(&path).is_ok_and(|t| t == Path::new("/dev/null"));
                let content = if masked {
                    String::new()
                } else {
                    read_unit_file(&path)?
                };
                files.push(ConfigFile { path, content });
            }
        }
        files.retain(|f| !f.content.is_empty());
        files.sort_by_key(ConfigFile::file_name);
        Ok(Self { dirs, files })
    }

    /// The files that match the link, in networkd's order (the first one wins).
    pub fn matching<'a>(&'a self, link: &'a LinkFacts) -> impl Iterator<Item = &'a ConfigFile> {
        self.files.iter().filter(move |f| matches(&f.content, link))
    }

    /// The file networkd configures the link with: networkd's own record when it
    /// is readable, else the first matching file.
    pub fn current<'a>(&'a self, ifindex: u32, link: &'a LinkFacts) -> Option<&'a ConfigFile> {
        let recorded = fs::read_to_string(Path::new(LINK_STATE_DIR).join(ifindex.to_string()))
            .ok()
            .and_then(|state| {
                state
                    .lines()
                    .find_map(|l| l.strip_prefix("NETWORK_FILE=").map(PathBuf::from))
            });
        if let Some(recorded) = recorded
            && let Some(file) = self.files.iter().find(|f| f.path == recorded)
        {
            return Some(file);
        }
        self.matching(link).next()
    }

    /// The drop-ins (`<name>.d/*.conf`) of a `.network` file, in the order networkd
    /// applies them.
    pub fn drop_ins(&self, file_name: &str) -> std::io::Result<Vec<ConfigFile>> {
        let mut found: Vec<ConfigFile> = Vec::new();
        for dir in &self.dirs {
            for (path, name) in dir_entries(&dir.join(format!("{file_name}.d")), ".conf")? {
                if found.iter().all(|f| f.file_name() != name) {
                    let content = read_unit_file(&path)?;
                    found.push(ConfigFile { path, content });
                }
            }
        }
        found.sort_by_key(ConfigFile::file_name);
        Ok(found)
    }
}

/// Largest configuration file read; networkd's are a few hundred bytes.
const MAX_UNIT_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a `.network` file or drop-in: UTF-8 text of at most
/// [`MAX_UNIT_FILE_BYTES`], so a stray huge file is an error, not a memory spike.
fn read_unit_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut content = String::new();
    fs::File::open(path)?
        .take(MAX_UNIT_FILE_BYTES + 1)
        .read_to_string(&mut content)
        .map_err(|err| std::io::Error::new(err.kind(), format!("{}: {err}", path.display())))?;
    if content.len() as u64 > MAX_UNIT_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is larger than {MAX_UNIT_FILE_BYTES} bytes: not a networkd configuration file",
                path.display()
            ),
        ));
    }
    Ok(content)
}

/// `(path, file name)` of the entries of `dir` whose name ends with `suffix`; an
/// absent directory has none.
fn dir_entries(dir: &Path, suffix: &str) -> std::io::Result<Vec<(PathBuf, String)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(suffix) && !name.starts_with('.') {
            out.push((entry.path(), name));
        }
    }
    Ok(out)
}

/// Sections whose `RouteMetric=` sets the metric of DHCP or RA routes.
const ROUTE_METRIC_SECTIONS: [&str; 3] = ["DHCP", "DHCPv4", "IPv6AcceptRA"];

/// The configuration that pins `interface`'s route metric: the settings of `base`
/// (the file that configured it so far) and its drop-ins, with `[Match]` narrowed
/// to the interface's name and the route metrics set to `metric`.
pub fn render_pinned(
    interface: &str,
    metric: u32,
    base: &ConfigFile,
    drop_ins: &[ConfigFile],
    ipv6: bool,
) -> String {
    let mut out = format!(
        "{HEADER_MARK} (`routemon pin`): the default routes of {interface} get metric {metric},\n\
         # below every other interface's, so that exactly one default route is the best.\n\
         # The settings below are copied from {}{}.\n\
         # `routemon unpin --apply` restores the previous configuration.\n\n\
         [Match]\nName={interface}\n",
        base.path.display(),
        if drop_ins.is_empty() {
            ""
        } else {
            " and its drop-ins"
        },
    );
    let mut keeps_configuration = false;
    for source in std::iter::once(base).chain(drop_ins) {
        let (copied, keeps) = copy_settings(&source.content);
        keeps_configuration |= keeps;
        if !copied.trim().is_empty() {
            out.push_str(&format!("\n# from {}\n", source.path.display()));
            out.push_str(copied.trim_end());
            out.push('\n');
        }
    }
    out.push_str("\n# routemon: the pin.\n");
    if !keeps_configuration {
        // Without it, every networkd restart removes the DHCP address and routes
        // and re-acquires them: a gap in egress each time.
        out.push_str("[Network]\nKeepConfiguration=dhcp-on-stop\n\n");
    }
    out.push_str(&format!("[DHCPv4]\nRouteMetric={metric}\n"));
    if ipv6 {
        out.push_str(&format!("\n[IPv6AcceptRA]\nRouteMetric={metric}\n"));
    }
    out
}

/// The lines of a file except its `[Match]` section and the `RouteMetric=` lines
/// routemon replaces; and whether it sets `KeepConfiguration=`.
fn copy_settings(content: &str) -> (String, bool) {
    let mut out = String::new();
    let mut section = String::new();
    let mut keeps = false;
    for line in logical_lines(content) {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
            if section == "Match" {
                continue;
            }
        }
        if section == "Match" {
            continue;
        }
        let key = trimmed.split_once('=').map(|(k, _)| k.trim());
        if key == Some("RouteMetric") && ROUTE_METRIC_SECTIONS.contains(&section.as_str()) {
            continue;
        }
        if key == Some("KeepConfiguration") && section == "Network" {
            keeps = true;
        }
        out.push_str(&line);
        out.push('\n');
    }
    (out, keeps)
}

/// How `--unmanage-others` names the interfaces it takes away from networkd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnmanageMatch {
    /// `Name=` with the exact interface names.
    Name,
    /// `MACAddress=` with the interfaces' MAC addresses.
    Mac,
}

/// The file that makes networkd leave `links` alone (`[Link] Unmanaged=yes`),
/// matched by exact names or MAC addresses, never by a pattern.
pub fn render_unmanaged(links: &[LinkFacts], by: UnmanageMatch) -> String {
    let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    let matcher = match by {
        UnmanageMatch::Name => format!("Name={}", names.join(" ")),
        UnmanageMatch::Mac => format!(
            "MACAddress={}",
            links
                .iter()
                .filter_map(|l| l.mac.as_deref())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    };
    format!(
        "{HEADER_MARK} (`routemon pin --unmanage-others`): systemd-networkd leaves these\n\
         # secondary interfaces to their owner (e.g. the Cilium agent): {}.\n\
         # `routemon unpin --apply` restores the previous configuration.\n\n\
         [Match]\n{matcher}\n\n[Link]\nUnmanaged=yes\n",
        names.join(", ")
    )
}

/// The `RouteMetric=` values a file sets, as `(section, value)`.
pub fn route_metrics(content: &str) -> Vec<(String, String)> {
    assignments(content)
        .into_iter()
        .filter(|a| a.key == "RouteMetric" && ROUTE_METRIC_SECTIONS.contains(&a.section.as_str()))
        .map(|a| (a.section, a.value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str, mac: &str) -> LinkFacts {
        LinkFacts {
            name: name.into(),
            mac: Some(mac.into()),
            kind: None,
            driver: Some("ena".into()),
            link_type: "ether".into(),
        }
    }

    #[test]
    fn parses_sections_comments_and_continuations() {
        let text =
            "# c\n[Match]\nName=ens*  \n; x\n[Network]\nDHCP=yes\nDNS=1.1.1.1 \\\n 8.8.8.8\n";
        let a = assignments(text);
        assert_eq!(a.len(), 3);
        assert_eq!(
            (a[0].section.as_str(), a[0].value.as_str()),
            ("Match", "ens*")
        );
        assert_eq!(a[2].value, "1.1.1.1   8.8.8.8");
    }

    #[test]
    fn match_rules() {
        let ens5 = facts("ens5", "02:00:00:00:00:05");
        assert!(matches("[Match]\nName=ens*\n", &ens5));
        assert!(matches("[Match]\nName=eth* ens5\n", &ens5));
        assert!(!matches("[Match]\nName=!ens5\n", &ens5));
        assert!(!matches("[Match]\nName=ens6\n", &ens5));
        assert!(matches("[Match]\nMACAddress=02:00:00:00:00:05\n", &ens5));
        assert!(!matches(
            "[Match]\nName=ens*\nMACAddress=02:00:00:00:00:06\n",
            &ens5
        ));
        assert!(matches("[Match]\nDriver=ena ixgbevf\n", &ens5));
        assert!(matches("[Match]\nName=eth0\nName=\nName=ens5\n", &ens5));
        assert!(
            matches("[Network]\nDHCP=yes\n", &ens5),
            "no [Match]: every link"
        );
        assert!(matches("[Match]\nVirtualization=!container\n", &ens5));
    }

    #[test]
    fn pinned_file_keeps_base_settings_and_sets_the_metric() {
        let base = ConfigFile {
            path: "/usr/lib/systemd/network/80-ec2.network".into(),
            content: "[Match]\nDriver=ena\n\n[Link]\nMTUBytes=9001\n\n[Network]\nDHCP=yes\n\n\
                      [DHCPv4]\nUseHostname=no\nRouteMetric=1024\n"
                .into(),
        };
        let text = render_pinned("ens5", 1000, &base, &[], true);
        assert!(is_routemon_file(&text));
        let a = assignments(&text);
        let get = |section: &str, key: &str| -> Vec<String> {
            a.iter()
                .filter(|x| x.section == section && x.key == key)
                .map(|x| x.value.clone())
                .collect()
        };
        assert_eq!(get("Match", "Name"), ["ens5"]);
        assert!(get("Match", "Driver").is_empty());
        assert_eq!(get("Link", "MTUBytes"), ["9001"]);
        assert_eq!(get("Network", "DHCP"), ["yes"]);
        assert_eq!(get("DHCPv4", "UseHostname"), ["no"]);
        assert_eq!(get("DHCPv4", "RouteMetric"), ["1000"]);
        assert_eq!(get("IPv6AcceptRA", "RouteMetric"), ["1000"]);
        assert_eq!(get("Network", "KeepConfiguration"), ["dhcp-on-stop"]);
        assert_eq!(
            route_metrics(&text),
            [
                ("DHCPv4".to_owned(), "1000".to_owned()),
                ("IPv6AcceptRA".to_owned(), "1000".to_owned())
            ]
        );
    }

    #[test]
    fn unmanaged_file_names_exact_interfaces() {
        let links = [
            facts("ens6", "02:00:00:00:00:06"),
            facts("ens7", "02:00:00:00:00:07"),
        ];
        let by_name = render_unmanaged(&links, UnmanageMatch::Name);
        assert!(by_name.contains("\nName=ens6 ens7\n"));
        assert!(by_name.contains("[Link]\nUnmanaged=yes\n"));
        let by_mac = render_unmanaged(&links, UnmanageMatch::Mac);
        assert!(by_mac.contains("\nMACAddress=02:00:00:00:00:06 02:00:00:00:00:07\n"));
        assert!(!matches(&by_name, &facts("ens5", "x")));
        assert!(!matches(&by_name, &facts("lo", "x")));
        assert!(matches(&by_name, &links[1]));
    }
}
