//! `metricstream-bench`: the load generator for metricstream. This file
//! owns the process: parsing arguments, raising the file-descriptor limit
//! and refusing runs that need more descriptors than allowed, checking that
//! the loopback target answers at all, dispatching to a scenario, printing
//! its report and choosing the exit status (0 run completed, 1 target
//! unreachable or, for `forward`, the receiver never counted every sample;
//! 2 bad arguments). `compare` hands over to `compare/`,
//! which runs this same program once per scenario and server.
//!
//! It is its own crate in the workspace and uses nothing of the server: it
//! talks HTTP to whatever target it is given, so its dependencies (plots,
//! histograms) never reach the server's build.

mod body;
mod burst;
mod churn;
mod cli;
mod closed_loop;
mod compare;
mod conn;
mod forward;
mod http;
mod idle;
mod keepalive;
mod progress;
mod report;
mod scrape;
mod stats;
mod sys;
mod write;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, Scenario, Settings};

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("metricstream-bench: {msg}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match &cli.command {
        Command::Compare(args) => return compare::main(args),
        Command::Forward(args) => args.settings(),
        command => match command.scenario() {
            Some((scenario, args)) => args.settings(scenario),
            None => Err("no scenario given".to_string()),
        },
    };
    let settings = match settings {
        Ok(s) => s,
        Err(e) => return fail(2, &format!("error: {e}")),
    };

    let limit = match sys::raise_nofile_limit() {
        Ok(l) => l,
        Err(e) => return fail(2, &format!("error: cannot read RLIMIT_NOFILE: {e}")),
    };
    let needed = settings.connections as u64 + sys::FD_SLACK + 4 * settings.threads as u64;
    if needed > limit {
        return fail(
            2,
            &format!(
                "error: {} connections need about {needed} file descriptors but RLIMIT_NOFILE allows {limit} (hard limit); lower --connections",
                settings.connections
            ),
        );
    }
    let receiver_pid = settings.forward.as_ref().and_then(|f| f.receiver_pid);
    for (flag, pid) in [("--pid", settings.pid), ("--receiver-pid", receiver_pid)] {
        if let Some(pid) = pid {
            if sys::rss_kib(pid).is_none() {
                return fail(
                    2,
                    &format!("error: {flag} {pid}: cannot read /proc/{pid}/status"),
                );
            }
        }
    }

    if let Err(e) = preflight(&settings) {
        return fail(1, &format!("target {} unreachable: {e}", settings.target));
    }

    let result = match settings.scenario {
        Scenario::Burst => burst::run(&settings),
        Scenario::Churn => churn::run(&settings),
        Scenario::Keepalive => keepalive::run(&settings),
        Scenario::Write => write::run(&settings),
        Scenario::Idle => idle::run(&settings),
        Scenario::Forward => forward::run(&settings),
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => return fail(1, &format!("{} failed: {e}", settings.scenario.name())),
    };
    if !report.reached {
        return fail(
            1,
            &format!(
                "target {} unreachable: no connection could be established",
                settings.target
            ),
        );
    }
    if let Err(e) = report.print(settings.scenario.name(), &settings.target, settings.json) {
        return fail(1, &format!("cannot write the report: {e}"));
    }
    if report.json.get("complete") == Some(&serde_json::Value::Bool(false)) {
        return fail(
            1,
            "the receiver did not count every acknowledged sample within --drain-timeout",
        );
    }
    ExitCode::SUCCESS
}

/// One blocking connect with `--timeout`, closed at once: tells "nothing
/// listens there" apart from results worth reporting.
fn preflight(s: &Settings) -> std::io::Result<()> {
    let stream = std::net::TcpStream::connect_timeout(&s.addr, s.timeout)?;
    drop(stream);
    Ok(())
}
