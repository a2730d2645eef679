#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| osaurus_relay_fuzz::ws_frames(data));
