#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| osaurus_relay_fuzz::relay_steps(data));
