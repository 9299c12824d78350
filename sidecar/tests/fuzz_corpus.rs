//! The fuzz targets (fuzz/targets, the same functions `make fuzz` runs under libFuzzer) replayed
//! on their committed corpus and on deterministic mutations of it: every truncation at sixteenths
//! of a seed's length and 128 seeded byte changes per seed. A panic or a failed assertion inside
//! a target fails this test and names the input. This is what `make test` runs of the fuzzers;
//! coverage-guided runs take the instrumented build and are `make fuzz`.

#[path = "../../fuzz/targets/image_body.rs"]
mod image_body;
#[path = "../../fuzz/targets/modelpack.rs"]
mod modelpack;
#[path = "../../fuzz/targets/npz.rs"]
mod npz;
#[path = "../../fuzz/targets/oip_request.rs"]
mod oip_request;
#[path = "../../fuzz/targets/onnx_model.rs"]
mod onnx_model;

use edgefleet_testenv::repo_root;

/// A fuzz target: its name (the corpus directory) and its function.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 5] = [
    ("oip_request", oip_request::run),
    ("image_body", image_body::run),
    ("onnx_model", onnx_model::run),
    ("npz", npz::run),
    ("modelpack", modelpack::run),
];
const CHANGES_PER_SEED: u64 = 128;

/// SplitMix64: a fixed sequence, so a failure replays exactly.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed itself, its truncations, and seeded changes (one to four bytes set to a random
/// value, or to 0x00/0xff, which hits length and count fields).
fn variants(seed: &[u8], salt: u64) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("seed".to_string(), seed.to_vec())];
    for k in 0..16 {
        let n = seed.len() * k / 16;
        out.push((format!("first {n} bytes"), seed[..n].to_vec()));
    }
    if seed.is_empty() {
        return out;
    }
    let mut state = salt;
    for i in 0..CHANGES_PER_SEED {
        let mut v = seed.to_vec();
        let count = 1 + next(&mut state) % 4;
        for _ in 0..count {
            let at = (next(&mut state) % v.len() as u64) as usize;
            v[at] = match next(&mut state) % 4 {
                0 => 0x00,
                1 => 0xff,
                _ => next(&mut state) as u8,
            };
        }
        out.push((format!("change {i} (salt {salt})"), v));
    }
    out
}

#[test]
fn every_fuzz_target_survives_its_corpus_and_mutations_of_it() {
    let (mut seeds_seen, mut replayed) = (0, 0);
    for (target, run) in TARGETS {
        let dir = repo_root().join("fuzz/corpus").join(target);
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        seeds.sort();
        assert!(
            !seeds.is_empty(),
            "{target} has no corpus in {}",
            dir.display()
        );
        seeds_seen += seeds.len();
        for (n, seed) in seeds.iter().enumerate() {
            let bytes = std::fs::read(seed).unwrap();
            for (what, input) in variants(&bytes, n as u64 + 1) {
                let outcome = std::panic::catch_unwind(|| run(&input));
                assert!(
                    outcome.is_ok(),
                    "fuzz target {target} panicked on {} ({what})",
                    seed.display()
                );
                replayed += 1;
            }
        }
    }
    // Each (non-empty) seed gives itself, 16 truncations and the changes.
    assert!(
        seeds_seen >= 11,
        "the committed corpus has {seeds_seen} seeds"
    );
    assert_eq!(replayed, seeds_seen * (17 + CHANGES_PER_SEED as usize));
}
