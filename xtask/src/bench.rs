//! Benchmarks: placeholder replaced below.
use anyhow::Result;
pub fn run(_rounds: usize) -> Result<()> {
    anyhow::bail!("bench not yet implemented")
}
