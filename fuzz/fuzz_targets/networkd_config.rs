//! systemd-networkd `.network` files: the unit-file parser, `[Match]` evaluation
//! and the prediction over them. The input is split into up to four files at
//! NUL bytes, tried in order as networkd would.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use routemon::{
    doctor::networkd,
    pin::networkd::{ConfigFile, LinkFacts, NetworkdConfig, assignments, matches},
};

fuzz_target!(|data: &[u8]| {
    let files: Vec<ConfigFile> = data
        .split(|b| *b == 0)
        .take(4)
        .enumerate()
        .map(|(i, content)| ConfigFile {
            path: PathBuf::from(format!("/fuzz/{i:02}.network")),
            content: String::from_utf8_lossy(content).into_owned(),
        })
        .collect();
    let link = LinkFacts {
        name: "ens5".into(),
        link_type: "ether".into(),
        ..LinkFacts::default()
    };
    for file in &files {
        let _ = assignments(&file.content);
        let _ = matches(&file.content, &link);
    }
    let config = NetworkdConfig {
        dirs: Vec::new(),
        files,
    };
    let _ = networkd::check(&config, &[link], None);
});
