//! OS randomness for the engine, read in blocks to keep syscalls off the hot path.

use osaurus_relay_engine::Entropy;

pub struct OsEntropy {
    pool: Vec<u8>,
    used: usize,
}

const POOL: usize = 4096;

impl OsEntropy {
    pub fn new() -> Self {
        OsEntropy {
            pool: vec![0; POOL],
            used: POOL,
        }
    }
}

impl Default for OsEntropy {
    fn default() -> Self {
        Self::new()
    }
}

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            if self.used == POOL {
                getrandom::fill(&mut self.pool).expect("the OS random source failed");
                self.used = 0;
            }
            let n = (buf.len() - done).min(POOL - self.used);
            buf[done..done + n].copy_from_slice(&self.pool[self.used..self.used + n]);
            // Bytes handed out once are wiped so they cannot be handed out twice.
            self.pool[self.used..self.used + n].fill(0);
            self.used += n;
            done += n;
        }
    }
}
