//! `kubelet-scope serve`: keeps the namespace map (from the apiserver, or from a
//! file for local use) and serves versioned snapshots to every node's Envoy.
//!
//! This module owns the `serve` arguments, logging, the runtime and the wiring: one
//! source task (`kube_source` or `file_source`) publishes into the [`store::Store`],
//! `http` serves from it, SIGTERM stops both. It must not do any of their work
//! itself: no namespace parsing, no HTTP handling beyond binding the listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::EXIT_INVALID;

mod auth;
mod file_source;
mod http;
mod kube_source;
mod metrics;
mod select;
mod store;

#[derive(Args)]
pub struct ServeArgs {
    /// Address of the HTTP API (/v1/snapshot, /healthz, /readyz, /metrics).
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Export this namespace label key (repeatable). Nothing is exported unless
    /// named here or by --label-prefix.
    #[arg(long = "label", value_name = "KEY")]
    labels: Vec<String>,
    /// Export every namespace label whose key starts with this prefix (repeatable).
    #[arg(long = "label-prefix", value_name = "PREFIX")]
    label_prefixes: Vec<String>,
    /// Read namespaces from this file (`kubectl get namespaces -o yaml|json`)
    /// instead of watching the apiserver; reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    namespaces_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM) instead of plain HTTP; reread
    /// every minute, so a rotated Secret is picked up.
    #[arg(long, value_name = "FILE", requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// Serve /v1/snapshot only to a bearer token of this ServiceAccount,
    /// `NAMESPACE:NAME` (repeatable), as a TokenReview with the apiserver says (the
    /// server's own ServiceAccount needs `system:auth-delegator`). Without it the
    /// snapshot is open to anyone who reaches the listener.
    #[arg(long = "allow-serviceaccount", value_name = "NAMESPACE:NAME", value_parser = parse_serviceaccount)]
    allow_serviceaccounts: Vec<String>,
    /// Audiences the token must carry (repeatable; default: the apiserver's).
    #[arg(long = "token-audience", value_name = "AUDIENCE")]
    token_audiences: Vec<String>,
    /// How long a TokenReview's answer (positive or negative) is reused.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    auth_cache_seconds: u64,
    /// Log format on stderr; the level comes from RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn parse_serviceaccount(s: &str) -> Result<String, String> {
    let valid = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    match s.split_once(':') {
        Some((ns, name)) if valid(ns) && valid(name) => Ok(s.to_owned()),
        _ => Err(format!("{s:?} is not NAMESPACE:NAME of a ServiceAccount")),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub fn serve(args: &ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    let selection = match select::LabelSelection::new(&args.labels, &args.label_prefixes) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, selection)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(args: &ServeArgs, selection: select::LabelSelection) -> Result<(), String> {
    let store = store::Store::default();
    let metrics = Arc::new(metrics::Metrics::default());
    let needs_client = args.namespaces_file.is_none() || !args.allow_serviceaccounts.is_empty();
    let client = if needs_client {
        // Kubeconfig ($KUBECONFIG, ~/.kube/config) or in-cluster, as kube-rs infers.
        let config = kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes client configuration: {e}"))?;
        tracing::info!(apiserver = %config.cluster_url, "talking to the apiserver");
        Some(
            kube::Client::try_from(config)
                .map_err(|e| format!("cannot build the Kubernetes client: {e}"))?,
        )
    } else {
        None
    };
    let source = match (&args.namespaces_file, &client) {
        (Some(path), _) => {
            tracing::info!(path = %path.display(), "serving namespaces from a file");
            tokio::spawn(file_source::run(
                path.clone(),
                file_source::POLL_INTERVAL,
                selection,
                store.clone(),
                metrics.clone(),
            ))
        }
        (None, Some(client)) => {
            tracing::info!("watching namespaces");
            tokio::spawn(kube_source::run(
                client.clone(),
                selection,
                store.clone(),
                metrics.clone(),
            ))
        }
        (None, None) => return Err("no namespace source".into()),
    };
    let auth = match (&client, args.allow_serviceaccounts.is_empty()) {
        (Some(client), false) => {
            tracing::info!(allowed = ?args.allow_serviceaccounts, "snapshot requires a ServiceAccount token");
            Some(Arc::new(auth::Authenticator::new(
                client.clone(),
                &args.allow_serviceaccounts,
                args.token_audiences.clone(),
                std::time::Duration::from_secs(args.auth_cache_seconds),
            )))
        }
        _ => None,
    };
    let shutdown = CancellationToken::new();
    let app = http::guarded_router(
        http::AppState {
            store,
            metrics,
            shutdown: shutdown.clone(),
        },
        auth,
    );
    let served = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) => serve_tls(args.listen, cert, key, app, shutdown).await,
        _ => serve_plain(args.listen, app, shutdown).await,
    };
    source.abort();
    served
}

async fn serve_plain(
    listen: SocketAddr,
    app: axum::Router,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, "serving snapshots over HTTP");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            terminated().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        })
        .await
        .map_err(|e| format!("HTTP server failed: {e}"))
}

async fn serve_tls(
    listen: SocketAddr,
    cert: &Path,
    key: &Path,
    app: axum::Router,
    shutdown: CancellationToken,
) -> Result<(), String> {
    // Only ring is compiled in; make it the process' provider, as kube-rs' is.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|e| format!("cannot load {} / {}: {e}", cert.display(), key.display()))?;
    let reload = tokio::spawn({
        let (tls, cert, key) = (tls.clone(), cert.to_owned(), key.to_owned());
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(error) = tls.reload_from_pem_file(&cert, &key).await {
                    tracing::warn!(%error, "cannot reload the serving certificate; keeping the old one");
                }
            }
        }
    });
    let handle = axum_server::Handle::new();
    tokio::spawn({
        let handle = handle.clone();
        async move {
            terminated().await;
            tracing::info!("shutting down");
            shutdown.cancel();
            handle.graceful_shutdown(Some(Duration::from_secs(5)));
        }
    });
    tracing::info!(%listen, "serving snapshots over HTTPS");
    let served = axum_server::bind_rustls(listen, tls)
        .handle(handle)
        .serve(app.into_make_service())
        .await
        .map_err(|e| format!("HTTPS server failed on {listen}: {e}"));
    reload.abort();
    served
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (a terminal).
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot handle SIGTERM; only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
