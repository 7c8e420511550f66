//! Pruned Batcher sorting networks: construction, pruning and Rust code generation.
//!
//! This file is compiled twice: by `build.rs` (through `#[path]`), which writes the generated
//! straight-line networks into `$OUT_DIR/networks.rs`, and as `crate::netgen` for the
//! interpreted networks of `network.rs` and the tests. One generator, so the compiled and the
//! interpreted networks are the same comparators. Plain `std` only (build scripts have no
//! access to the crate's dependencies).
//!
//! Construction (docs/performance.md): Batcher's odd-even merge sort for the next power of two
//! in *recursive* order (sort each half, then merge), the order in which a straight-line
//! emission keeps small sub-problems in registers; the iterative level-by-level order of the
//! same comparators made the C prototype spill 4x more. Virtual padding rows above `n` hold
//! `+inf`, so a comparator that touches one never moves anything and is dropped. A backward
//! pass then keeps only the comparators that feed a wanted output rank, and marks those whose
//! other output is dead as min-only or max-only.

#![allow(dead_code)]

/// What a kept compare-exchange of `(a, b)` (`a < b`) computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `a = min(a, b); b = max(a, b)`.
    Both,
    /// Only `a = min(a, b)` is used later.
    Min,
    /// Only `b = max(a, b)` is used later.
    Max,
}

/// Networks up to this size are generated exactly for every `n` (all rows fit the 16-32 SIMD
/// registers or nearly so); above it, padded sizes are generated and `n` is padded up.
pub const EXACT_MAX: usize = 32;
/// Padded sizes above [`EXACT_MAX`], all even (the median's balanced pads keep its middles in
/// place only for an even size). The largest is the bound of the compiled networks; larger
/// `n` run the interpreted network (`network.rs`). Compile time sets the bound: the sizes up
/// to 64 take the release build from about 30 s to about 3.5 min (six copies of every
/// network: two key widths, three SIMD levels), and adding padded sizes 80-256 for float32 on
/// avx2 alone (31,000 more comparators) had not finished compiling after 17 minutes
/// (a C prototype took 4.5 minutes to compile one n = 1000 network). 52 and 56 serve
/// n = 49..56 (n = 50 has a bandwidth target, docs/performance.md: the 52-median has 632 min/max against the
/// 64-median's 828) for little build time (3.8 min before, 4.0-4.5 min after, here); every
/// multiple of 4 from 36 measured 5.5 min.
pub const PADDED: &[usize] = &[40, 48, 52, 56, 64];

/// The compiled network size that serves `n`, or `None` above the largest.
pub fn generated_size(n: usize) -> Option<usize> {
    if (1..=EXACT_MAX).contains(&n) {
        return Some(n);
    }
    PADDED.iter().copied().find(|&m| m >= n)
}

/// All comparators of Batcher's odd-even merge sort on `size` (a power of two) keys, in
/// recursive order.
pub fn batcher(size: usize) -> Vec<(usize, usize)> {
    fn sort(lo: usize, n: usize, out: &mut Vec<(usize, usize)>) {
        if n > 1 {
            let m = n / 2;
            sort(lo, m, out);
            sort(lo + m, m, out);
            merge(lo, n, 1, out);
        }
    }
    // Merge the two sorted halves of the `n` keys at `lo, lo + r, lo + 2r, ...`.
    fn merge(lo: usize, n: usize, r: usize, out: &mut Vec<(usize, usize)>) {
        let m = r * 2;
        if m < n {
            merge(lo, n, m, out);
            merge(lo + r, n, m, out);
            let mut i = lo + r;
            while i + r < lo + n {
                out.push((i, i + r));
                i += m;
            }
        } else {
            out.push((lo, lo + r));
        }
    }
    assert!(size.is_power_of_two());
    let mut out = Vec::new();
    sort(0, size, &mut out);
    out
}

/// The comparators that sort `n` keys far enough to place every rank in `wanted`, with the
/// outputs each one must compute.
pub fn pruned(n: usize, wanted: &[usize]) -> Vec<(usize, usize, Kind)> {
    prune(n, &batcher_n(n), wanted)
}

/// Batcher's network for the next power of two, recursive order, without the comparators
/// that touch a `+inf` padding row (`b >= n`).
pub fn batcher_n(n: usize) -> Vec<(usize, usize)> {
    batcher(n.next_power_of_two())
        .into_iter()
        .filter(|&(_, b)| b < n)
        .collect()
}

/// The comparators of `all` (a network on `n` keys, in execution order) that feed a rank in
/// `wanted`, with the outputs each one must compute.
pub fn prune(n: usize, all: &[(usize, usize)], wanted: &[usize]) -> Vec<(usize, usize, Kind)> {
    let mut needed = vec![false; n];
    for &r in wanted {
        needed[r] = true;
    }
    let mut kept = Vec::with_capacity(all.len());
    for &(a, b) in all.iter().rev() {
        let kind = match (needed[a], needed[b]) {
            (true, true) => Kind::Both,
            (true, false) => Kind::Min,
            (false, true) => Kind::Max,
            (false, false) => continue,
        };
        needed[a] = true;
        needed[b] = true;
        kept.push((a, b, kind));
    }
    kept.reverse();
    kept
}

/// The ranks a generated median network of size `m` places: the middle for odd `m`, both
/// middles for even `m` (which serves the `mean`, `lower` and `upper` conventions alike, and
/// every padded `n <= m` with balanced padding, see [`median_padding`]).
pub fn median_ranks(m: usize) -> Vec<usize> {
    if m % 2 == 1 {
        vec![m / 2]
    } else {
        vec![m / 2 - 1, m / 2]
    }
}

/// Pads below and above `n` real keys in a median network of size `m >= n`: `-inf` pads
/// below and `+inf` pads above, as many of each as keeps both middles of `n` at the middles of
/// `m` (for an even `m`: `(m - n) / 2` below, rounded down).
pub fn median_padding(n: usize, m: usize) -> (usize, usize) {
    let p = m - n;
    if n == m {
        (0, 0)
    } else {
        (p / 2, p - p / 2)
    }
}

/// Rust source of one generated network: a unit struct `name` implementing
/// `Net<size>` (see `network.rs`), whose `apply` loads every slot through `load` (any lane
/// vector `V`), runs the comparators as straight-line code on locals, and returns the slots.
pub fn emit(name: &str, size: usize, net: &[(usize, usize, Kind)]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    writeln!(s, "/// {} comparators on {size} slots.", net.len()).unwrap();
    writeln!(s, "pub struct {name};").unwrap();
    writeln!(s, "impl Net<{size}> for {name} {{").unwrap();
    writeln!(s, "    #[inline(always)]").unwrap();
    writeln!(
        s,
        "    fn apply<V: Cx>(load: impl Fn(usize) -> V) -> [V; {size}] {{"
    )
    .unwrap();
    let mut written = vec![false; size];
    for &(a, b, kind) in net {
        match kind {
            Kind::Both => {
                written[a] = true;
                written[b] = true;
            }
            Kind::Min => written[a] = true,
            Kind::Max => written[b] = true,
        }
    }
    for (i, &w) in written.iter().enumerate() {
        let m = if w { "mut " } else { "" };
        writeln!(s, "        let {m}r{i} = load({i});").unwrap();
    }
    for &(a, b, kind) in net {
        match kind {
            Kind::Both => writeln!(s, "        V::cx(&mut r{a}, &mut r{b});"),
            Kind::Min => writeln!(s, "        r{a} = r{a}.min(r{b});"),
            Kind::Max => writeln!(s, "        r{b} = r{a}.max(r{b});"),
        }
        .unwrap();
    }
    let slots: Vec<String> = (0..size).map(|i| format!("r{i}")).collect();
    writeln!(s, "        [{}]", slots.join(", ")).unwrap();
    writeln!(s, "    }}\n}}").unwrap();
    s
}

/// The whole generated module: a median network and a full-sort network for every size, and
/// the dispatchers `with_median(m, job)` / `with_sort(m, job)` that call
/// `job.run::<m, Network>()` for the network of size `m`.
pub fn generate() -> String {
    use std::fmt::Write;
    let mut sizes: Vec<usize> = (1..=EXACT_MAX).collect();
    sizes.extend_from_slice(PADDED);
    let mut s = String::from(
        "// @generated by build.rs from rust/netgen.rs: pruned Batcher networks, recursive \
         order.\n\n",
    );
    for &m in &sizes {
        s += &emit(&format!("Median{m}"), m, &pruned(m, &median_ranks(m)));
        s += &emit(
            &format!("Sort{m}"),
            m,
            &pruned(m, &(0..m).collect::<Vec<_>>()),
        );
    }
    // Sorts of 1..=16 keys only: the interpreted network's presorted groups (network::Plan),
    // so that they do not instantiate every size up to 64.
    writeln!(
        s,
        "/// Run `job` with the compiled sort network of `m <= 16` keys.\n#[inline(always)]\n\
         pub fn with_small_sort<J: UseNet>(m: usize, job: J) -> J::Out {{\n    match m {{"
    )
    .unwrap();
    for m in 1..=16 {
        writeln!(s, "        {m} => job.run::<{m}, Sort{m}>(),").unwrap();
    }
    writeln!(
        s,
        "        _ => unreachable!(\"no small sort network of size {{m}}\"),\n    }}\n}}"
    )
    .unwrap();
    for (kind, prefix) in [("median", "Median"), ("sort", "Sort")] {
        writeln!(
            s,
            "/// Run `job` with the compiled {kind} network of size `m` (a size \
             `netgen::generated_size` returns)."
        )
        .unwrap();
        writeln!(
            s,
            "#[inline(always)]\npub fn with_{kind}<J: UseNet>(m: usize, job: J) -> J::Out {{\n    \
             match m {{"
        )
        .unwrap();
        for &m in &sizes {
            writeln!(s, "        {m} => job.run::<{m}, {prefix}{m}>(),").unwrap();
        }
        writeln!(
            s,
            "        _ => unreachable!(\"no compiled network of size {{m}}\"),\n    }}\n}}"
        )
        .unwrap();
    }
    s
}
