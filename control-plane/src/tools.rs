//! Offline tools over the filter's own modules: `rewrite`, `check-config`,
//! `label-name`.
//!
//! They call the filter crate's configuration, policy and rewriters exactly as the
//! wasm build does and must not re-implement any of it, so a capture rewritten here
//! is byte for byte what Envoy would send. `rewrite` must not write a partial body:
//! output goes out only once the whole body was rewritten.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

use clap::Args;
use kubelet_scope_filter::config::{Config, TenantSource};
use kubelet_scope_filter::policy::decide::{decide, resolve_tenant, Decision, Request};
use kubelet_scope_filter::prometheus::labels;
use kubelet_scope_filter::rewrite::BodyFilter;
use kubelet_scope_filter::snapshot::catalog::{Catalog, RequestScope};
use kubelet_scope_filter::snapshot::Snapshot;

use crate::{EXIT_INVALID, EXIT_REFUSED};

#[derive(Args)]
pub struct RewriteArgs {
    /// The plugin configuration (JSON).
    #[arg(long)]
    config: PathBuf,
    /// A namespace snapshot (JSON, as served on /v1/snapshot); required when the
    /// configuration reads namespace labels.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// The kubelet request path the body answers, e.g. /metrics/cadvisor.
    #[arg(long)]
    path: String,
    /// The tenant header's value: the tenant, or with `namespaceOf` the caller's
    /// namespace (resolved through the snapshot). A static tenant needs none.
    #[arg(long)]
    tenant: Option<String>,
    /// The virtual cluster header's value (`tenancy.virtualClusterHeader`): the body
    /// as that virtual cluster sees it, its pods under their virtual names.
    #[arg(long)]
    virtual_cluster: Option<String>,
    /// Feed the body to the filter in chunks of this many bytes, as Envoy would.
    #[arg(long, default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(1..))]
    chunk_size: u32,
}

/// Why `rewrite` stopped: bad input (exit 2) or a refusal (exit 3).
enum Failure {
    Invalid(String),
    Refused(String),
}

/// Runs the filter's logic for `--path` on the body read from stdin. The output
/// is written only when the whole body was rewritten, so a refusal leaks nothing.
pub fn rewrite(args: &RewriteArgs) -> ExitCode {
    match rewrite_body(args) {
        Ok(out) => match std::io::stdout().lock().write_all(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kubelet-scope rewrite: cannot write output: {e}");
                ExitCode::FAILURE
            }
        },
        Err(Failure::Invalid(msg)) => {
            eprintln!("kubelet-scope rewrite: {msg}");
            ExitCode::from(EXIT_INVALID)
        }
        Err(Failure::Refused(msg)) => {
            eprintln!("kubelet-scope rewrite: refused: {msg}");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

fn rewrite_body(args: &RewriteArgs) -> Result<Vec<u8>, Failure> {
    let config = read(&args.config)
        .and_then(|b| Config::parse(&b).map_err(|e| format!("{}: {e}", args.config.display())))
        .map_err(Failure::Invalid)?;
    let snapshot = match &args.snapshot {
        Some(path) => Some(
            read(path)
                .and_then(|b| Snapshot::parse(&b).map_err(|e| format!("{}: {e}", path.display())))
                .map_err(Failure::Invalid)?,
        ),
        None if config.needs_snapshot() => {
            return Err(Failure::Invalid(
                "--snapshot is required: the configuration reads namespace labels".into(),
            ))
        }
        None => None,
    };
    if let Some(TenantSource::Static(fixed)) = config.tenancy.as_ref().map(|t| &t.tenant) {
        if let Some(given) = args.tenant.as_ref().filter(|given| *given != fixed) {
            return Err(Failure::Invalid(format!(
                "--tenant {given:?} does not match the configuration's static tenant {fixed:?}"
            )));
        }
    }
    let catalog = Rc::new(Catalog::new(&config, snapshot.as_ref()));
    let tenant = resolve_tenant(&config, Some(&catalog), args.tenant.as_deref());

    let mut body = std::io::stdin().lock();
    let mut out = Vec::new();
    let virtual_cluster = config
        .tenancy
        .as_ref()
        .and_then(|t| t.virtual_cluster_header.as_ref())
        .and(args.virtual_cluster.as_deref());
    if args.virtual_cluster.is_some() && virtual_cluster.is_none() {
        return Err(Failure::Invalid(
            "--virtual-cluster needs tenancy.virtualClusterHeader in the configuration".into(),
        ));
    }
    let request = Request {
        method: "GET",
        path: &args.path,
        tenant: tenant.as_deref(),
        virtual_cluster,
    };
    let kind = match decide(&config, Some(&catalog), &request) {
        Decision::Deny { status, reason } => {
            return Err(Failure::Refused(format!("{status} {reason}")))
        }
        Decision::PassThrough => {
            body.read_to_end(&mut out)
                .map_err(|e| Failure::Invalid(format!("cannot read the body: {e}")))?;
            return Ok(out);
        }
        Decision::Rewrite(kind) => kind,
    };
    let scope = RequestScope::of_request(catalog, tenant.as_deref(), virtual_cluster);
    let mut filter = BodyFilter::new(kind, scope, config.max_json_body_bytes);
    let mut chunk = vec![0; args.chunk_size as usize];
    loop {
        let filled = fill(&mut body, &mut chunk)
            .map_err(|e| Failure::Invalid(format!("cannot read the body: {e}")))?;
        if filled == 0 {
            break;
        }
        filter
            .feed(&chunk[..filled], &mut out)
            .map_err(|e| Failure::Refused(e.to_string()))?;
    }
    filter
        .finish(&mut out)
        .map_err(|e| Failure::Refused(e.to_string()))?;
    Ok(out)
}

/// Reads until `buf` is full or the input ends, so chunks are exactly
/// `--chunk-size` long whatever the pipe delivers.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

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
