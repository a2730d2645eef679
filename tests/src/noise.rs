//! Deterministic bytes that are not UTF-8 (every byte value appears), made
//! piece by piece so a test can serve or check 64 MiB without holding it.

/// An xorshift stream; the same seed gives the same bytes.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed | 1)
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            let x = &mut self.0;
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *b = (*x >> 24) as u8;
        }
    }
}

/// `n` bytes of `Noise::new(seed)`.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; n];
    Noise::new(seed).fill(&mut v);
    v
}
