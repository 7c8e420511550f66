//! Tiny helpers shared by the unit tests.

use crate::input::Rows;

pub fn rows<T: crate::order::Float>(data: &[Vec<T>]) -> Rows<'_, T> {
    Rows::new("test", data.iter().map(|r| &r[..]).collect()).unwrap()
}

/// A deterministic xorshift stream for test data.
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    pub fn matrix(&mut self, n: usize, d: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| (0..d).map(|_| self.next_f64() as f32).collect())
            .collect()
    }
}

/// The full `n × n` squared-distance matrix of `x`, the slow obvious way.
pub fn sq_dists(x: &[Vec<f64>]) -> Vec<f64> {
    let n = x.len();
    let mut d = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            d[i * n + j] = x[i].iter().zip(&x[j]).map(|(a, b)| (a - b) * (a - b)).sum();
        }
    }
    d
}
