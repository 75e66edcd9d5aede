//! Command-line values: the arguments (split at NUL bytes) are parsed as
//! `routemon <args>`; invalid ones are clap errors, never a panic.
#![no_main]

use clap::Parser as _;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let args = std::iter::once("routemon".to_owned()).chain(
        data.split(|b| *b == 0)
            .take(16)
            .map(|a| String::from_utf8_lossy(a).into_owned()),
    );
    let _ = routemon::cli::Cli::try_parse_from(args);
});
