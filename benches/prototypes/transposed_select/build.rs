//! Writes Batcher's sort of 32 rows into OUT_DIR twice: as straight-line code on zmm rows
//! (`sort32_lanes`) and as a comparator list (`NET32`, for the interpreted variant).
fn batcher(n: usize) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut p = 1;
    while p < n {
        let mut k = p;
        while k >= 1 {
            let mut j = k % p;
            while j + k < n {
                for i in 0..k.min(n - j - k) {
                    if (i + j) / (2 * p) == (i + j + k) / (2 * p) {
                        v.push((i + j, i + j + k));
                    }
                }
                j += 2 * k;
            }
            k /= 2;
        }
        p *= 2;
    }
    v
}

fn main() {
    let mut s =
        String::from("#[inline(always)]\nunsafe fn sort32_lanes(s: &mut [__m512i; 32]) {\n");
    let names: Vec<String> = (0..32).map(|i| format!("mut x{i}")).collect();
    s += &format!("    let [{}] = *s;\n", names.join(", "));
    for (a, b) in batcher(32) {
        s += &format!("    let t = _mm512_min_epu32(x{a}, x{b}); x{b} = _mm512_max_epu32(x{a}, x{b}); x{a} = t;\n");
    }
    let names: Vec<String> = (0..32).map(|i| format!("x{i}")).collect();
    s += &format!("    *s = [{}];\n}}\n", names.join(", "));
    let pairs: Vec<String> = batcher(32)
        .iter()
        .map(|(a, b)| format!("({a}, {b})"))
        .collect();
    s += &format!(
        "const NET32: &[(usize, usize)] = &[{}];\n",
        pairs.join(", ")
    );
    std::fs::write(
        std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("net32.rs"),
        s,
    )
    .unwrap();
}
