//! NodeConfig YAML: the line-tracking YAML tree and the NodeConfig checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = routemon::doctor::yaml::parse(text);
    let _ = routemon::doctor::nodeconfig::check("fuzz", text);
});
