#![no_main]
//! An established, authenticated peer turns hostile: see `kwik_tests::fuzz::peer::peer_primary`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kwik_tests::fuzz::peer::peer_primary(data);
});
