//! EC2 user data as `routemon doctor --user-data` reads it: any bytes (raw YAML,
//! MIME multipart, base64, garbage) give checks, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let checks = routemon::doctor::userdata::check("fuzz", data);
    assert!(!checks.is_empty(), "every input gets at least one check");
});
