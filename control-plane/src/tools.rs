//! Offline tools over the filter's own modules.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use kubelet_scope_filter::config::Config;
use kubelet_scope_filter::labels;

use crate::EXIT_INVALID;

#[derive(Args)]
pub struct CheckConfigArgs {
    /// The plugin configuration (the JSON given to Envoy as `configuration`).
    file: PathBuf,
}

pub fn check_config(args: &CheckConfigArgs) -> ExitCode {
    match read(&args.file).and_then(|bytes| Config::parse(&bytes).map_err(|e| e.to_string())) {
        Ok(config) => {
            let features: Vec<&str> = [
                config.inject.as_ref().map(|_| "inject"),
                config.tenancy.as_ref().map(|_| "tenancy"),
            ]
            .into_iter()
            .flatten()
            .collect();
            println!(
                "{}: ok ({})",
                args.file.display(),
                if features.is_empty() {
                    "pass-through".to_owned()
                } else {
                    features.join(" + ")
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", args.file.display());
            ExitCode::from(EXIT_INVALID)
        }
    }
}

#[derive(Args)]
pub struct LabelNameArgs {
    /// Kubernetes label keys.
    #[arg(required = true)]
    keys: Vec<String>,
}

pub fn label_name(args: &LabelNameArgs) -> ExitCode {
    for key in &args.keys {
        println!("{}", labels::sanitize_name(key));
    }
    ExitCode::SUCCESS
}

/// Reads a file, with the path in the error.
pub fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
