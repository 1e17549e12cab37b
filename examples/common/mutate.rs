//! The JSON-aware mutations shared by the `fuzz_frames` and `output_digest`
//! examples (included with `#[path]`; examples cannot share a module any
//! other way without a crate of their own).

use std::path::{Path, PathBuf};

use rand::Rng;

/// Values a mutation puts where a JSON value was: the edge cases of every
/// coercion the normalizers do (numbers as strings, out-of-range numbers,
/// lone surrogates, dates in other formats, nested containers).
pub const VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "1.5",
    "12.0",
    "1e308",
    "1e400",
    "-0.0",
    "9223372036854775808",
    "-9223372036854775809",
    "1779099997.234",
    "\"\"",
    "\"x\"",
    "\"12\"",
    "\" 7 \"",
    "\"true\"",
    "\"a, b,,c\"",
    "\"[\\\"a\\\",1]\"",
    "\"2026-05-18T10:26:37.234Z\"",
    "\"2026-05-18 10:26:37\"",
    "\"2026-05-18T12:26:37+02:00\"",
    "[]",
    "{}",
    "null",
    "true",
    "false",
    "[1,\"a\",null]",
    "[\"a\",2,true]",
    "[{\"x\":1}]",
    "{\"a\":{}}",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"é\\n\\\"q\\\"\"",
];

/// One mutation strategy. The weights differ per use: the fuzzer wants deep
/// nesting (stack safety), the digest wants mostly well-formed edits (it
/// checks coercions byte for byte).
pub struct Mutator {
    /// Deepest `[[[...]]]` nesting inserted (exclusive).
    pub max_nesting: usize,
    /// Weight of "replace a value" among the 9 + `value_swaps` cases.
    pub value_swaps: u32,
}

impl Mutator {
    /// Applies one random edit to `input`; `seeds` are the splice partners.
    pub fn mutate(&self, rng: &mut impl Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
        let swaps_end = 5 + self.value_swaps;
        let n = input.len().max(1);
        match rng.gen_range(0..swaps_end + 4) {
            0 => {
                let i = rng.gen_range(0..n).min(input.len().saturating_sub(1));
                if let Some(b) = input.get_mut(i) {
                    *b ^= 1 << rng.gen_range(0..8);
                }
            }
            1 => {
                let i = rng.gen_range(0..=input.len());
                input.insert(i, rng.gen());
            }
            2 => {
                if !input.is_empty() {
                    let i = rng.gen_range(0..input.len());
                    let len = rng.gen_range(1..=16.min(input.len() - i));
                    input.drain(i..i + len);
                }
            }
            3 => input.truncate(rng.gen_range(0..=input.len())),
            4 => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let cut = rng.gen_range(0..=input.len());
                let from = rng.gen_range(0..=other.len());
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            c if c < swaps_end => {
                // Replace the value after a random `":` with something else
                // (mostly well-formed: exercises the coercions).
                let positions: Vec<usize> = input
                    .windows(2)
                    .enumerate()
                    .filter(|(_, w)| w == b"\":")
                    .map(|(i, _)| i + 2)
                    .collect();
                if let Some(&at) = positions.get(rng.gen_range(0..positions.len().max(1))) {
                    let end = input[at..]
                        .iter()
                        .position(|b| *b == b',' || *b == b'}')
                        .map_or(input.len(), |e| at + e);
                    let v = VALUES[rng.gen_range(0..VALUES.len())].as_bytes();
                    input.splice(at..end, v.iter().copied());
                }
            }
            c if c == swaps_end => {
                let depth = rng.gen_range(1..self.max_nesting);
                let at = rng.gen_range(0..=input.len());
                let mut nest = vec![b'['; depth];
                nest.extend(std::iter::repeat_n(b']', depth));
                input.splice(at..at, nest);
            }
            _ => {
                // Add an unknown field at a random object.
                let opens: Vec<usize> = input
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'{')
                    .map(|(i, _)| i)
                    .collect();
                if let Some(&at) = opens.get(rng.gen_range(0..opens.len().max(1))) {
                    let f: &[u8] = match rng.gen_range(0..3) {
                        0 => b"\"x_fuzz\":[1,{\"y\":2}],",
                        1 => b"\"extra_profile_available_3\":{\"id\":1},",
                        _ => b"\"z\\u00e9\":null,",
                    };
                    input.splice(at + 1..at + 1, f.iter().copied());
                }
            }
        }
    }
}

/// The fixture files under `dirs` (relative to `root`), sorted, without the
/// golden outputs (`*.expected.json`) and binary Avro fixtures.
pub fn fixture_files(root: &Path, dirs: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in dirs {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        paths.sort();
        out.extend(paths.into_iter().filter(|p| {
            let s = p.to_string_lossy();
            !s.ends_with(".expected.json") && !s.ends_with(".avro")
        }));
    }
    out
}
