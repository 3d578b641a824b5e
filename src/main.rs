//! The `metricstream` binary: configuration, logging, then the server. Nothing else.

use std::process::ExitCode;

use metricstream::{Config, Startup};

fn main() -> ExitCode {
    let config = match Config::from_env_and_args() {
        Ok(Startup::Run(config)) => config,
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
        .init();
    match metricstream::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{}", e);
            eprintln!("metricstream: {}", e);
            ExitCode::from(1)
        }
    }
}
