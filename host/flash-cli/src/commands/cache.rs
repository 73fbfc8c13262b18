//! `flash cache info/clean`: what the AOT cache of compiled components holds, and emptying
//! it. Its size is bounded on its own (`FLASH_CACHE_MAX_MB`, least recently used entries
//! go first; see [`flash_runtime::aot_cache`]); `clean` is for taking the space back now.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use flash_runtime::AotCache;
use flash_runtime::aot_cache::CacheUsage;

/// Show or empty the cache of compiled components (FLASH_CACHE_DIR, else
/// ~/.cache/flash; bounded by FLASH_CACHE_MAX_MB, default 2048).
#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Where the AOT cache is, what it holds and its bound.
    Info,
    /// Remove every compiled component; the next build or boot compiles again.
    Clean,
}

impl CacheArgs {
    pub fn run(self) -> Result<()> {
        let cache = AotCache::from_env()?.context(
            "no cache directory: set FLASH_CACHE_DIR (or XDG_CACHE_HOME or HOME) to name one",
        )?;
        match self.command {
            CacheCommand::Info => {
                let usage = cache.usage()?;
                println!("AOT cache: {}", cache.dir().display());
                println!(
                    "holds {} (bound: {}, FLASH_CACHE_MAX_MB)",
                    describe(usage),
                    mib(cache.max_bytes())
                );
            }
            CacheCommand::Clean => {
                let freed = cache.clear()?;
                println!("removed {} from {}", describe(freed), cache.dir().display());
            }
        }
        Ok(())
    }
}

fn describe(usage: CacheUsage) -> String {
    let plural = if usage.entries == 1 { "y" } else { "ies" };
    format!(
        "{} compiled entr{plural}, {}",
        usage.entries,
        mib(usage.bytes)
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}
