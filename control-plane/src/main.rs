//! `kubelet-scope`: the control plane that serves namespace snapshots, and offline
//! tools that run the filter's exact logic on captured bodies.
//!
//! Exit codes: 0 success, 2 usage or invalid configuration/snapshot, 3 the filter
//! would refuse the request or fail closed.
//!
//! This file owns the command line and the exit codes only: each subcommand's work
//! lives in its module (`serve`, `tools`), and nothing here may re-implement what
//! the filter crate decides.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod serve;
mod tools;

#[derive(Parser)]
#[command(name = "kubelet-scope", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch Namespaces (or read --namespaces-file) and serve versioned snapshots
    /// on /v1/snapshot for the filter to long-poll.
    Serve(Box<serve::ServeArgs>),
    /// Rewrite a captured kubelet response body (stdin → stdout) exactly as the
    /// filter would for a request to --path.
    Rewrite(tools::RewriteArgs),
    /// Validate a plugin configuration file (JSON).
    CheckConfig(tools::CheckConfigArgs),
    /// Print the Prometheus label name for a Kubernetes label key
    /// (`app.kubernetes.io/team` → `app_kubernetes_io_team`).
    LabelName(tools::LabelNameArgs),
}

/// Exit code for usage errors and invalid configuration or snapshot.
pub const EXIT_INVALID: u8 = 2;
/// Exit code when the filter would refuse the request or fail closed.
pub const EXIT_REFUSED: u8 = 3;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_INVALID)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Serve(args) => serve::serve(&args),
        Command::Rewrite(args) => tools::rewrite(&args),
        Command::CheckConfig(args) => tools::check_config(&args),
        Command::LabelName(args) => tools::label_name(&args),
    }
}
