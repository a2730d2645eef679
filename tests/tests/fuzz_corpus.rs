//! Replays every checked-in fuzz input (seeds and regressions) on stable.

use std::path::Path;

#[test]
fn every_fuzz_corpus_input_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut total = 0;
    for (name, target) in osaurus_relay_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{name} has no seed inputs");
        for f in files {
            let data = std::fs::read(&f).expect("readable input");
            let r = std::panic::catch_unwind(|| target(&data));
            assert!(r.is_ok(), "{name}: {} fails", f.display());
            total += 1;
        }
    }
    assert!(total >= 6);
}

#[test]
fn relay_step_seeds_reach_relayed_calls_and_bad_answers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/relay_steps");
    let run = |name: &str| {
        osaurus_relay_fuzz::relay_steps_counters(&std::fs::read(dir.join(name)).unwrap())
    };
    let c = run("relay_call");
    assert_eq!(
        (c.total_tunnel_connections, c.total_requests_relayed),
        (1, 1),
        "{c:?}"
    );
    let c = run("bad_answers");
    assert!(c.bad_host_responses >= 1, "{c:?}");
}
