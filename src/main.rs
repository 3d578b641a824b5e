//! The `metricstream` binary: configuration, logging, then the server. Nothing else.

use std::process::ExitCode;

use metricstream::{Config, Startup};

/// mimalloc instead of the system allocator: request bodies of ~100 KB are allocated on
/// workers and freed on the aggregator thread at thousands per second, which glibc's
/// malloc answers with trims, fresh mmaps and page faults; mimalloc reuses the pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A thread's part of [`metricstream::sys::release_idle_memory`]: mimalloc frees the
/// calling thread's empty pages (and those other threads freed into its heap) back to the
/// OS.
fn collect_this_threads_heap() {
    // SAFETY: mi_collect takes no pointer and only walks the calling thread's own heap,
    // which mimalloc synchronises with other threads' frees into it.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

fn main() -> ExitCode {
    metricstream::sys::disable_transparent_huge_pages();
    metricstream::sys::set_idle_release(collect_this_threads_heap);
    let config = match Config::from_env_and_args() {
        Ok(Startup::Run(config)) => *config,
        Ok(Startup::Print(text)) => {
            print!("{}", text);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("metricstream: {}", e);
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        // The forward client logs full URLs (secrets in a query included) at debug.
        .filter_module(
            metricstream::forward::client::CLIENT_LOG_TARGET,
            log::LevelFilter::Info,
        )
        .init();
    match metricstream::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever RUST_LOG says (not also a log line: scripts read it).
            eprintln!("metricstream: {}", e);
            ExitCode::from(e.exit_code())
        }
    }
}
