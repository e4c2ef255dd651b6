//! Configuration files: the parser and its checks never panic on any text, and a config they
//! accept passes its own check again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_net::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = Config::parse(text, std::path::Path::new("fuzz.toml")) {
        c.check().expect("an accepted config checks again");
    }
});
