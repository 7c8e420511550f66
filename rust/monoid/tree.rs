//! Fixed-shape tree reductions over the sets of a CSR partition, and the level schedule of the
//! same trees for batched evaluation.
//!
//! Sets are given by `ptr` (CSR offsets: set `s` is rows `ptr[s] .. ptr[s+1]` of `x`, in that
//! order), built from a sorted `index` by [`ptr_from_index`]. The tree of a set of `k` elements
//! pairs neighbours `(0,1), (2,3), ...` level by level and carries an odd last node up
//! unchanged (PyG `LCMAggregation`'s shape; docs/algorithms.md): `k = 5` gives
//! `((x0 ⊕ x1) ⊕ (x2 ⊕ x3)) ⊕ x4`. It depends on `k` alone.

use rayon::prelude::*;

use super::{combine_rows, MFloat, Op};
use crate::error::AggError;
use crate::pool;
use crate::simd;

fn bad(rule: &'static str, message: String) -> AggError {
    AggError::InvalidParameter { rule, message }
}

/// CSR offsets from a sorted `index` (`index[e]` = the set of row `e`); `dim_size` sets the
/// number of sets (default `max(index) + 1`, 0 for an empty index).
pub fn ptr_from_index(index: &[i64], dim_size: Option<usize>) -> Result<Vec<usize>, AggError> {
    const RULE: &str = "segment index";
    if let Some(e) = index.iter().position(|&i| i < 0) {
        return Err(bad(
            RULE,
            format!("index must be >= 0, got index[{e}] = {}", index[e]),
        ));
    }
    if let Some(e) = index.windows(2).position(|w| w[1] < w[0]) {
        return Err(bad(
            RULE,
            format!(
                "index must be sorted (non-decreasing), got index[{e}] = {} > index[{}] = {}; \
                 sort the edges by destination first (e.g. torch_geometric.utils.sort_edge_index)",
                index[e],
                e + 1,
                index[e + 1]
            ),
        ));
    }
    let needed = index.last().map_or(0, |&m| m as usize + 1);
    let sets = dim_size.unwrap_or(needed);
    if sets < needed {
        return Err(bad(
            RULE,
            format!(
                "dim_size={sets} is too small for the largest index {}",
                needed - 1
            ),
        ));
    }
    let len = sets
        .checked_add(1)
        .ok_or(AggError::OutOfMemory { bytes: usize::MAX })?;
    let mut ptr = crate::alloc::zeroed::<usize>(len)?;
    for &i in index {
        ptr[i as usize + 1] += 1;
    }
    for s in 0..sets {
        ptr[s + 1] += ptr[s];
    }
    Ok(ptr)
}

/// Check CSR offsets for `rows` rows: `ptr[0] = 0`, non-decreasing, `ptr[-1] = rows`, and
/// `len(ptr) - 1 = dim_size` when given.
pub fn check_ptr(
    ptr: &[i64],
    rows: usize,
    dim_size: Option<usize>,
) -> Result<Vec<usize>, AggError> {
    const RULE: &str = "segment ptr";
    if ptr.is_empty() {
        return Err(bad(RULE, "ptr must hold at least one offset (0)".into()));
    }
    if ptr[0] != 0 {
        return Err(bad(
            RULE,
            format!("ptr must start at 0, got ptr[0] = {}", ptr[0]),
        ));
    }
    if let Some(s) = ptr.windows(2).position(|w| w[1] < w[0]) {
        return Err(bad(
            RULE,
            format!(
                "ptr must be non-decreasing, got ptr[{s}] = {} > ptr[{}] = {}",
                ptr[s],
                s + 1,
                ptr[s + 1]
            ),
        ));
    }
    let last = *ptr.last().unwrap();
    if last != rows as i64 {
        return Err(bad(
            RULE,
            format!("ptr must end at the number of rows ({rows}), got ptr[-1] = {last}"),
        ));
    }
    if let Some(n) = dim_size {
        if n != ptr.len() - 1 {
            return Err(bad(
                RULE,
                format!(
                    "dim_size={n} does not match ptr, which describes {} sets",
                    ptr.len() - 1
                ),
            ));
        }
    }
    Ok(ptr.iter().map(|&p| p as usize).collect())
}

/// Cut the sets `0..S` into consecutive chunks of about `target` rows each (at least one set).
fn chunks(ptr: &[usize], target: usize) -> Vec<(usize, usize)> {
    let sets = ptr.len() - 1;
    let mut out = Vec::new();
    let mut start = 0;
    while start < sets {
        let mut end = start + 1;
        while end < sets && ptr[end] - ptr[start] < target {
            end += 1;
        }
        out.push((start, end));
        start = end;
    }
    out
}

/// Run `task(first_set, last_set, out_part)` over chunks of sets, each writing the rows of
/// `out` that `rows_of(set range)` names (disjoint, in order), in parallel when the work is large.
fn for_each_chunk<T: Send>(
    ptr: &[usize],
    h: usize,
    out: &mut [T],
    out_rows: impl Fn(usize, usize) -> usize,
    task: impl Fn(usize, usize, &mut [T]) + Sync + Send,
) {
    let rows = ptr[ptr.len() - 1];
    let work = rows * h.max(1);
    let threads = pool::num_threads();
    let target = (rows / (threads * 8)).max(1);
    let parts = chunks(ptr, target);
    let mut slices = Vec::with_capacity(parts.len());
    let mut rest = out;
    for &(a, b) in &parts {
        let (head, tail) = rest.split_at_mut(out_rows(a, b) * h);
        slices.push((a, b, head));
        rest = tail;
    }
    if !crate::pool::split(work) || parts.len() == 1 {
        slices.into_iter().for_each(|(a, b, o)| task(a, b, o));
    } else {
        pool::install(|| slices.into_par_iter().for_each(|(a, b, o)| task(a, b, o)));
    }
}

/// Reduce sets `first..last` into `out` (one row of `h` per set) with the carry tree.
#[inline(always)]
fn reduce_sets_body<T: MFloat>(
    x: &[T],
    h: usize,
    ptr: &[usize],
    (first, last): (usize, usize),
    op: Op,
    empty: T,
    out: &mut [T],
) {
    // Slot t holds the value of a complete subtree of `size[t]` leaves; sizes decrease up the
    // stack (a binary counter), so at most 64 slots are ever live.
    let mut stack: Vec<T> = Vec::new();
    let mut size = [0usize; 65];
    for (s, o) in (first..last).zip(out.chunks_mut(h.max(1))) {
        let (lo, hi) = (ptr[s], ptr[s + 1]);
        let k = hi - lo;
        if k == 0 {
            o.fill(empty);
            continue;
        }
        let depth = usize::BITS as usize - k.leading_zeros() as usize + 1;
        if stack.len() < depth * h {
            stack.resize(depth * h, T::ZERO);
        }
        let mut t = 0usize;
        for i in lo..hi {
            let row = &x[i * h..(i + 1) * h];
            if (i - lo).is_multiple_of(2) {
                stack[t * h..(t + 1) * h].copy_from_slice(row);
                size[t] = 1;
                t += 1;
                continue;
            }
            combine_rows(op, &mut stack[(t - 1) * h..t * h], row);
            size[t - 1] = 2;
            while t >= 2 && size[t - 2] == size[t - 1] {
                let (a, b) = stack.split_at_mut((t - 1) * h);
                combine_rows(op, &mut a[(t - 2) * h..], &b[..h]);
                size[t - 2] *= 2;
                t -= 1;
            }
        }
        // Incomplete subtrees: right-nested, each joined under the larger one to its left.
        while t >= 2 {
            let (a, b) = stack.split_at_mut((t - 1) * h);
            combine_rows(op, &mut a[(t - 2) * h..], &b[..h]);
            t -= 1;
        }
        o.copy_from_slice(&stack[..h]);
        if op == Op::Mean && k > 1 {
            let c = T::from_usize(k);
            o.iter_mut().for_each(|v| *v = *v / c);
        }
    }
}

crate::simd::per_level! {
    avx512;
    /// Sets `range` reduced into `out`, the same body compiled for scalar, AVX2 and AVX-512
    /// (the compiler vectorises the row combines).
    #[allow(clippy::too_many_arguments)]
    fn reduce_sets[T: MFloat][T](
        _isa: I,
        x: &[T],
        h: usize,
        ptr: &[usize],
        range: (usize, usize),
        op: Op,
        empty: T,
        out: &mut [T],
    ) {
        reduce_sets_body(x, h, ptr, range, op, empty, out)
    }
}

/// `out[s] = ⊕ of rows ptr[s] .. ptr[s+1] of x` over the set's carry tree, `empty` for an
/// empty set; `x` is `rows × h` and `out` is `sets × h`, row-major. Bit-identical for every
/// thread count and SIMD level: each set is reduced by one task, in the same tree.
pub fn reduce<T: MFloat>(x: &[T], h: usize, ptr: &[usize], op: Op, empty: T, out: &mut [T]) {
    let sets = ptr.len() - 1;
    assert!(x.len() == ptr[sets] * h && out.len() == sets * h);
    let proof = simd::proof();
    for_each_chunk(
        ptr,
        h,
        out,
        |a, b| b - a,
        |a, b, o| reduce_sets(proof, x, h, ptr, (a, b), op, empty, o),
    );
}

/// The gradient of the product: `gx[e] = g[s] · Π_{i ≠ e in set s} x[i]` (prefix and suffix
/// products, so zeros among the inputs are handled exactly). `gx` is `rows × h`.
pub fn prod_backward<T: MFloat>(x: &[T], h: usize, ptr: &[usize], g: &[T], gx: &mut [T]) {
    let sets = ptr.len() - 1;
    assert!(x.len() == ptr[sets] * h && gx.len() == x.len() && g.len() == sets * h);
    for_each_chunk(
        ptr,
        h,
        gx,
        |a, b| ptr[b] - ptr[a],
        |a, b, o| {
            let base = ptr[a];
            let mut acc = vec![T::ZERO; h];
            for s in a..b {
                let (lo, hi) = (ptr[s], ptr[s + 1]);
                acc.fill(T::ONE);
                for i in lo..hi {
                    let r = (i - base) * h;
                    o[r..r + h].copy_from_slice(&acc);
                    acc.iter_mut()
                        .zip(&x[i * h..(i + 1) * h])
                        .for_each(|(a, &v)| *a = *a * v);
                }
                acc.copy_from_slice(&g[s * h..(s + 1) * h]);
                for i in (lo..hi).rev() {
                    let r = (i - base) * h;
                    o[r..r + h]
                        .iter_mut()
                        .zip(&acc)
                        .for_each(|(v, &a)| *v = *v * a);
                    acc.iter_mut()
                        .zip(&x[i * h..(i + 1) * h])
                        .for_each(|(a, &v)| *a = *a * v);
                }
            }
        },
    );
}

/// The gradient of [`reduce`] for every op: `gx` (`rows × h`) from the output `out` and its
/// gradient `g` (both `sets × h`). Sum: `g`; mean: `g / k`; max and min: `g / t` to each of the
/// `t` elements equal to the result (NaN counting as equal to a NaN result), 0 elsewhere;
/// logsumexp: `g · exp(x - out)` (0 where `out = -inf`); prod: see [`prod_backward`].
pub fn backward<T: MFloat>(
    x: &[T],
    h: usize,
    ptr: &[usize],
    op: Op,
    out: &[T],
    g: &[T],
    gx: &mut [T],
) {
    if op == Op::Prod {
        return prod_backward(x, h, ptr, g, gx);
    }
    let sets = ptr.len() - 1;
    assert!(x.len() == ptr[sets] * h && gx.len() == x.len());
    assert!(g.len() == sets * h && out.len() == sets * h);
    for_each_chunk(
        ptr,
        h,
        gx,
        |a, b| ptr[b] - ptr[a],
        |a, b, o| {
            let base = ptr[a];
            let mut ties = vec![T::ZERO; h];
            let mut share = vec![T::ZERO; h];
            for s in a..b {
                let (lo, hi) = (ptr[s], ptr[s + 1]);
                let (gs, os) = (&g[s * h..(s + 1) * h], &out[s * h..(s + 1) * h]);
                let rows = |i: usize| (i - base) * h..(i - base + 1) * h;
                let hit = |v: T, m: T| v == m || (v.is_nan() && m.is_nan());
                match op {
                    Op::Sum => (lo..hi).for_each(|i| o[rows(i)].copy_from_slice(gs)),
                    Op::Mean => {
                        let k = T::from_usize(hi - lo);
                        for i in lo..hi {
                            o[rows(i)]
                                .iter_mut()
                                .zip(gs)
                                .for_each(|(v, &gg)| *v = gg / k);
                        }
                    }
                    Op::Max | Op::Min => {
                        // Select (not branch) loops, so they vectorise: count the ties, then share the
                        // gradient among them.
                        ties.fill(T::ZERO);
                        for i in lo..hi {
                            let xr = &x[i * h..(i + 1) * h];
                            for ((t, &v), &m) in ties.iter_mut().zip(xr).zip(os) {
                                *t = *t + if hit(v, m) { T::ONE } else { T::ZERO };
                            }
                        }
                        for ((sh, &gg), &t) in share.iter_mut().zip(gs).zip(ties.iter()) {
                            *sh = gg / t;
                        }
                        for i in lo..hi {
                            let xr = &x[i * h..(i + 1) * h];
                            let r = rows(i);
                            for (((v, &xv), &m), &sh) in
                                o[r].iter_mut().zip(xr).zip(os).zip(share.iter())
                            {
                                *v = if hit(xv, m) { sh } else { T::ZERO };
                            }
                        }
                    }
                    Op::LogSumExp => {
                        for i in lo..hi {
                            let xr = &x[i * h..(i + 1) * h];
                            let r = rows(i);
                            for (j, v) in o[r].iter_mut().enumerate() {
                                *v = if os[j] == T::NEG_INFINITY {
                                    T::ZERO
                                } else {
                                    (xr[j] - os[j]).exp() * gs[j]
                                };
                            }
                        }
                    }
                    Op::Prod => unreachable!(),
                }
            }
        },
    );
}

/// How the sets of a schedule are padded (docs/algorithms.md, monoid tree reductions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pad {
    /// Each set reduced with its own tree over its own elements (an empty set has no tree).
    None,
    /// Every set padded with the pad row to the largest set size, as PyG's `to_dense_batch`
    /// with zeros: all sets share one tree and the pads are combined like elements.
    ZerosDense,
    /// Each set padded with the pad row (a learned identity) to `2^⌈log2 k⌉` leaves (one leaf
    /// for an empty set): perfect binary trees.
    Identity,
}

impl Pad {
    pub const NAMES: [&'static str; 3] = ["none", "zeros_dense", "identity"];

    pub fn parse(s: &str) -> Option<Pad> {
        Some(match s {
            "none" => Pad::None,
            "zeros_dense" => Pad::ZerosDense,
            "identity" => Pad::Identity,
            _ => return None,
        })
    }
}

/// One level of a [`Schedule`]: the pairs combined and the nodes carried up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LevelPlan {
    /// The left operands of the level's `P` pairs, then their right operands (`2P` positions
    /// in the level's node list).
    pub pairs: Vec<i64>,
    /// Positions carried to the next level unchanged (odd last nodes).
    pub carry: Vec<i64>,
}

/// The carry trees of every set, level by level.
///
/// Level 0's node list is the rows of `x` (plus the pad row at position `rows` in a padded
/// mode). Level `l + 1`'s node list is the `P` results of level `l`'s pairs, in order, followed
/// by the carried nodes. A set is *done* at the first level where it has one node left;
/// `done[l]` lists those positions and `done_sets[l]` their sets. An empty set in
/// [`Pad::None`] or [`Pad::ZerosDense`] with no elements at all is never done (its value is
/// the caller's fill).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    pub levels: Vec<LevelPlan>,
    /// `levels.len() + 1` lists.
    pub done: Vec<Vec<i64>>,
    pub done_sets: Vec<Vec<i64>>,
}

impl Schedule {
    /// Build the schedule of the sets `ptr` describes. O(total leaves), allocated fallibly
    /// ([`AggError::OutOfMemory`] where the leaves do not fit).
    pub fn build(ptr: &[usize], pad: Pad) -> Result<Schedule, AggError> {
        let sets = ptr.len() - 1;
        let rows = ptr[sets];
        let pad_row = rows as i64;
        let kmax = (0..sets).map(|s| ptr[s + 1] - ptr[s]).max().unwrap_or(0);
        let leaves_of = |k: usize| match pad {
            Pad::None => Some(k),
            Pad::ZerosDense => Some(kmax),
            Pad::Identity => k.max(1).checked_next_power_of_two(),
        };
        let total = (0..sets)
            .try_fold(0usize, |t, s| {
                t.checked_add(leaves_of(ptr[s + 1] - ptr[s])?)
            })
            .ok_or(AggError::OutOfMemory { bytes: usize::MAX })?;
        // The current node list of every set that still has nodes, flattened.
        let mut nodes: Vec<i64> = crate::alloc::with_capacity(total)?;
        let mut offs: Vec<usize> = vec![0];
        let mut ids: Vec<i64> = Vec::new();
        for s in 0..sets {
            let k = ptr[s + 1] - ptr[s];
            let leaves = leaves_of(k).expect("checked in the total above");
            if leaves == 0 {
                continue;
            }
            nodes.extend((ptr[s]..ptr[s + 1]).map(|e| e as i64));
            nodes.extend(std::iter::repeat_n(pad_row, leaves - k));
            offs.push(nodes.len());
            ids.push(s as i64);
        }
        let mut sched = Schedule::default();
        loop {
            let mut done = Vec::new();
            let mut done_sets = Vec::new();
            let mut pairs_total = 0usize;
            for (j, w) in offs.windows(2).enumerate() {
                let len = w[1] - w[0];
                if len == 1 {
                    done.push(nodes[w[0]]);
                    done_sets.push(ids[j]);
                } else {
                    pairs_total += len / 2;
                }
            }
            sched.done.push(done);
            sched.done_sets.push(done_sets);
            if pairs_total == 0 {
                break;
            }
            let mut lefts = Vec::with_capacity(pairs_total);
            let mut rights = Vec::with_capacity(pairs_total);
            let mut carry = Vec::new();
            let mut next_nodes = Vec::with_capacity(pairs_total + sets);
            let mut next_offs = vec![0usize];
            let mut next_ids = Vec::new();
            for (j, w) in offs.windows(2).enumerate() {
                let list = &nodes[w[0]..w[1]];
                if list.len() < 2 {
                    continue;
                }
                for p in list.chunks_exact(2) {
                    next_nodes.push(lefts.len() as i64);
                    lefts.push(p[0]);
                    rights.push(p[1]);
                }
                if list.len() % 2 == 1 {
                    next_nodes.push((pairs_total + carry.len()) as i64);
                    carry.push(list[list.len() - 1]);
                }
                next_offs.push(next_nodes.len());
                next_ids.push(ids[j]);
            }
            lefts.extend_from_slice(&rights);
            sched.levels.push(LevelPlan {
                pairs: lefts,
                carry,
            });
            nodes = next_nodes;
            offs = next_offs;
            ids = next_ids;
        }
        Ok(sched)
    }

    /// The number of binary combines the schedule performs.
    pub fn combines(&self) -> usize {
        self.levels.iter().map(|l| l.pairs.len() / 2).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluate a schedule symbolically: each node is the string of its tree.
    fn eval(sched: &Schedule, leaves: Vec<String>, sets: usize) -> Vec<Option<String>> {
        let mut cur = leaves;
        let mut out = vec![None; sets];
        for (l, plan) in sched.levels.iter().enumerate() {
            for (&p, &s) in sched.done[l].iter().zip(&sched.done_sets[l]) {
                out[s as usize] = Some(cur[p as usize].clone());
            }
            let pn = plan.pairs.len() / 2;
            let mut next: Vec<String> = (0..pn)
                .map(|j| {
                    format!(
                        "({}{})",
                        cur[plan.pairs[j] as usize],
                        cur[plan.pairs[pn + j] as usize]
                    )
                })
                .collect();
            next.extend(plan.carry.iter().map(|&c| cur[c as usize].clone()));
            cur = next;
        }
        let l = sched.levels.len();
        for (&p, &s) in sched.done[l].iter().zip(&sched.done_sets[l]) {
            out[s as usize] = Some(cur[p as usize].clone());
        }
        out
    }

    /// The stack reduction with string concatenation as the (non-associative) operator.
    fn stack_tree(k: usize) -> String {
        let names: Vec<String> = (0..k).map(|i| format!("x{i}")).collect();
        let mut st: Vec<(String, usize)> = Vec::new();
        for n in names {
            st.push((n, 1));
            while st.len() >= 2 && st[st.len() - 2].1 == st[st.len() - 1].1 {
                let (b, sb) = st.pop().unwrap();
                let (a, _) = st.pop().unwrap();
                st.push((format!("({a}{b})"), 2 * sb));
            }
        }
        while st.len() >= 2 {
            let (b, _) = st.pop().unwrap();
            let (a, sa) = st.pop().unwrap();
            st.push((format!("({a}{b})"), sa));
        }
        st.pop().map(|p| p.0).unwrap_or_default()
    }

    #[test]
    fn tree_shape_of_five() {
        let ptr = [0, 5];
        let s = Schedule::build(&ptr, Pad::None).unwrap();
        let leaves = (0..5).map(|i| format!("x{i}")).collect();
        assert_eq!(
            eval(&s, leaves, 1)[0].as_deref(),
            Some("(((x0x1)(x2x3))x4)")
        );
        assert_eq!(s.combines(), 4);
        assert_eq!(s.levels.len(), 3);
    }

    #[test]
    fn schedule_equals_the_stack_reduction_for_every_size() {
        // Sets of sizes 0..70 in one batch: each set's tree is the stack algorithm's tree.
        let sizes: Vec<usize> = (0..70).collect();
        let mut ptr = vec![0];
        for k in &sizes {
            ptr.push(ptr.last().unwrap() + k);
        }
        let s = Schedule::build(&ptr, Pad::None).unwrap();
        let mut leaves = Vec::new();
        for &k in &sizes {
            leaves.extend((0..k).map(|i| format!("x{i}")));
        }
        let out = eval(&s, leaves, sizes.len());
        for (k, o) in sizes.iter().zip(out) {
            if *k == 0 {
                assert!(o.is_none());
            } else {
                assert_eq!(o.unwrap(), stack_tree(*k), "k={k}");
            }
        }
        assert_eq!(s.combines(), ptr[sizes.len()] - (sizes.len() - 1));
    }

    #[test]
    fn padded_modes() {
        let ptr = [0, 3, 3, 4];
        let leaves = |rows: usize| {
            let mut l: Vec<String> = (0..rows).map(|i| format!("x{i}")).collect();
            l.push("e".into());
            l
        };
        let z = Schedule::build(&ptr, Pad::ZerosDense).unwrap();
        let out = eval(&z, leaves(4), 3);
        assert_eq!(out[0].as_deref(), Some("((x0x1)x2)"));
        assert_eq!(out[1].as_deref(), Some("((ee)e)"));
        assert_eq!(out[2].as_deref(), Some("((x3e)e)"));
        let i = Schedule::build(&ptr, Pad::Identity).unwrap();
        let out = eval(&i, leaves(4), 3);
        assert_eq!(out[0].as_deref(), Some("((x0x1)(x2e))"));
        assert_eq!(out[1].as_deref(), Some("e"));
        assert_eq!(out[2].as_deref(), Some("x3"));
    }

    #[test]
    fn reduce_matches_a_sequential_tree_and_any_thread_count() {
        let h = 3;
        let sizes = [0usize, 1, 2, 3, 5, 7, 8, 13, 0, 64, 100];
        let mut ptr = vec![0];
        for k in sizes {
            ptr.push(ptr.last().unwrap() + k);
        }
        let rows = *ptr.last().unwrap();
        let x: Vec<f64> = (0..rows * h)
            .map(|i| ((i * 7919) % 113) as f64 * 0.37 - 20.0)
            .collect();
        for op in [Op::Sum, Op::Mean, Op::Prod, Op::Max, Op::Min, Op::LogSumExp] {
            let mut out = vec![0.0; sizes.len() * h];
            reduce(&x, h, &ptr, op, -7.0, &mut out);
            for (s, &k) in sizes.iter().enumerate() {
                for j in 0..h {
                    let col: Vec<f64> = (ptr[s]..ptr[s + 1]).map(|i| x[i * h + j]).collect();
                    let want = if k == 0 {
                        -7.0
                    } else {
                        let v = tree_fold(&col, op);
                        if op == Op::Mean {
                            v / k as f64
                        } else {
                            v
                        }
                    };
                    let got = out[s * h + j];
                    assert_eq!(got.to_bits(), want.to_bits(), "{op:?} set {s} col {j}");
                }
            }
        }
    }

    /// The carry tree written level by level, as the schedule describes it.
    fn tree_fold(v: &[f64], op: Op) -> f64 {
        let mut cur = v.to_vec();
        while cur.len() > 1 {
            let mut next: Vec<f64> = cur
                .chunks_exact(2)
                .map(|p| {
                    let mut a = [p[0]];
                    combine_rows(op, &mut a, &[p[1]]);
                    a[0]
                })
                .collect();
            if cur.len() % 2 == 1 {
                next.push(cur[cur.len() - 1]);
            }
            cur = next;
        }
        cur[0]
    }

    #[test]
    fn prod_backward_handles_zeros() {
        let x = [2.0f64, 0.0, 3.0, 0.0, 0.0, 5.0];
        let ptr = [0, 3, 5, 6];
        let g = [1.0, 10.0, 2.0];
        let mut gx = [0.0; 6];
        prod_backward(&x, 1, &ptr, &g, &mut gx);
        assert_eq!(gx, [0.0, 6.0, 0.0, 0.0, 0.0, 2.0]);
    }

    #[test]
    fn backward_of_each_op() {
        let x = [1.0f64, 4.0, 4.0, 2.0, f64::NEG_INFINITY, f64::NEG_INFINITY];
        let ptr = [0, 4, 4, 6];
        let g = [3.0, 9.0, 5.0];
        let grad = |op: Op| {
            let mut out = [0.0; 3];
            reduce(&x, 1, &ptr, op, 0.0, &mut out);
            let mut gx = [0.0; 6];
            backward(&x, 1, &ptr, op, &out, &g, &mut gx);
            gx
        };
        assert_eq!(grad(Op::Sum), [3.0, 3.0, 3.0, 3.0, 5.0, 5.0]);
        assert_eq!(grad(Op::Mean), [0.75, 0.75, 0.75, 0.75, 2.5, 2.5]);
        assert_eq!(grad(Op::Max), [0.0, 1.5, 1.5, 0.0, 2.5, 2.5]);
        assert_eq!(grad(Op::Min), [3.0, 0.0, 0.0, 0.0, 2.5, 2.5]);
        let lse = grad(Op::LogSumExp);
        let z: f64 = [1.0f64, 4.0, 4.0, 2.0].iter().map(|v| v.exp()).sum();
        assert!((lse[1] - 3.0 * 4f64.exp() / z).abs() < 1e-12 && lse[4] == 0.0);
    }

    #[test]
    fn index_and_ptr_checks() {
        assert_eq!(ptr_from_index(&[0, 0, 2], None).unwrap(), vec![0, 2, 2, 3]);
        assert_eq!(
            ptr_from_index(&[0, 0, 2], Some(5)).unwrap(),
            vec![0, 2, 2, 3, 3, 3]
        );
        assert_eq!(ptr_from_index(&[], None).unwrap(), vec![0]);
        assert!(ptr_from_index(&[1, 0], None)
            .unwrap_err()
            .to_string()
            .contains("sorted"));
        assert!(ptr_from_index(&[0, 3], Some(2)).is_err());
        assert!(ptr_from_index(&[-1], None).is_err());
        assert_eq!(check_ptr(&[0, 2, 3], 3, Some(2)).unwrap(), vec![0, 2, 3]);
        assert!(check_ptr(&[0, 2, 3], 3, Some(3))
            .unwrap_err()
            .to_string()
            .contains("dim_size"));
        assert!(check_ptr(&[0, 2, 3], 4, None).is_err());
        assert!(check_ptr(&[1, 2, 3], 3, None).is_err());
        assert!(check_ptr(&[0, 3, 2], 2, None).is_err());
        assert!(check_ptr(&[], 0, None).is_err());
    }
}
