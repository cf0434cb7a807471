//! `kubelet-scope serve`: keeps the namespace map (from the apiserver, or from a
//! file for local use) and serves versioned snapshots to every node's Envoy; with
//! `--authz-listen`, also answers Envoy's `ext_authz` for tenants' tokens of the
//! host and of virtual clusters (`authz`, `issuers`).
//!
//! This module owns the `serve` arguments, logging, the runtime and the wiring: one
//! source task (`kube_source` or `file_source`) publishes into the [`store::Store`],
//! `http` serves from it, `authz` from the [`issuers::Registry`] (kept current by
//! `issuers::maintain`), SIGTERM stops them all. It must not do any of their work
//! itself: no namespace parsing, no HTTP handling beyond binding the listeners.

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
mod authz;
mod file_source;
mod http;
mod issuers;
mod kube_source;
mod metrics;
mod pod_source;
mod select;
mod store;
mod token_cache;
mod token_claims;
mod token_review;
mod virtual_clusters;

/// Verdicts each reviewer of the snapshot's and the ext_authz check keeps at most.
const SNAPSHOT_CACHE_ENTRIES: usize = 4096;

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
    /// Also serve Envoy's ext_authz (HTTP service) on this address: /v1/authz/…
    /// answers whose a tenant's bearer token is, as its issuer's apiserver says
    /// (HTTPS with --tls-cert-file, as the main listener).
    #[arg(long, value_name = "ADDR")]
    authz_listen: Option<SocketAddr>,
    /// Audiences a tenant's token must carry (repeatable; default: the apiserver's).
    /// A virtual cluster's `audiences` overrides it.
    #[arg(
        long = "authz-audience",
        value_name = "AUDIENCE",
        requires = "authz_listen"
    )]
    authz_audiences: Vec<String>,
    /// The host's service-account issuer (the `iss` of its tokens); default: what
    /// its apiserver's /.well-known/openid-configuration says.
    #[arg(long, value_name = "URL", requires = "authz_listen")]
    host_issuer: Option<String>,
    /// The virtual clusters whose tokens are tenants (YAML: `virtualClusters:` a
    /// list of {name, hostNamespace, issuer, audiences, kubeconfigSecret |
    /// kubeconfigFile, server}); read at start.
    #[arg(long, value_name = "FILE", requires = "authz_listen")]
    virtual_clusters: Option<PathBuf>,
    /// How long the ext_authz check reuses a positive TokenReview answer (never
    /// past the token's exp).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    authz_cache_seconds: u64,
    /// How long it reuses a negative one.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    authz_negative_cache_seconds: u64,
    /// Answers the ext_authz check keeps per cluster at most.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    authz_cache_entries: usize,
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
    // Read before anything starts: a mistake in the file is a usage error.
    let virtual_clusters = match &args.virtual_clusters {
        Some(path) => virtual_clusters::read(path)?,
        None => Vec::new(),
    };
    let needs_client = args.namespaces_file.is_none()
        || !args.allow_serviceaccounts.is_empty()
        || args.authz_listen.is_some();
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
    // The host pods of the configured virtual clusters, for their tenants' names.
    let pods = match (&client, virtual_clusters.is_empty()) {
        (Some(client), false) => {
            let hosts = virtual_clusters
                .iter()
                .map(|vc| (vc.name.clone(), vc.host_namespace.clone()))
                .collect();
            tracing::info!("watching the virtual clusters' pods");
            Some(tokio::spawn(pod_source::run(
                client.clone(),
                hosts,
                store.clone(),
                metrics.clone(),
            )))
        }
        _ => None,
    };
    let auth = match (&client, args.allow_serviceaccounts.is_empty()) {
        (Some(client), false) => {
            tracing::info!(allowed = ?args.allow_serviceaccounts, "snapshot requires a ServiceAccount token");
            let ttl = Duration::from_secs(args.auth_cache_seconds);
            let reviewer = token_review::Reviewer::new(
                "snapshot",
                Some(client.clone()),
                args.token_audiences.clone(),
                token_cache::Ttl {
                    positive: ttl,
                    negative: ttl,
                },
                SNAPSHOT_CACHE_ENTRIES,
                metrics.clone(),
            );
            Some(Arc::new(auth::Authenticator::new(
                reviewer,
                &args.allow_serviceaccounts,
            )))
        }
        _ => None,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            terminated().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        }
    });
    let tls = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key).await?),
        _ => None,
    };
    let authz = args.authz_listen.map(|listen| {
        let registry = Arc::new(registry(args, client.clone(), virtual_clusters, &metrics));
        let maintained = tokio::spawn(issuers::maintain(registry.clone(), client.clone()));
        let app = authz::router(authz::AuthzState {
            registry,
            metrics: metrics.clone(),
        });
        (listen, app, maintained)
    });
    let app = http::guarded_router(
        http::AppState {
            store,
            metrics,
            shutdown: shutdown.clone(),
        },
        auth,
    );
    let snapshots = serve_on(args.listen, app, tls.clone(), shutdown.clone(), "snapshots");
    let served = match authz {
        Some((listen, app, maintained)) => {
            let checks = serve_on(listen, app, tls, shutdown.clone(), "ext_authz");
            let served = tokio::try_join!(snapshots, checks).map(|_| ());
            maintained.abort();
            served
        }
        None => snapshots.await,
    };
    // A listener that failed stops the process: nothing half-served.
    shutdown.cancel();
    source.abort();
    if let Some(pods) = pods {
        pods.abort();
    }
    served
}

/// The clusters whose tokens the ext_authz check accepts: the host (the server's
/// own client) and the configured virtual clusters, each its own reviewer.
fn registry(
    args: &ServeArgs,
    host: Option<kube::Client>,
    virtual_clusters: Vec<virtual_clusters::VirtualCluster>,
    metrics: &Arc<metrics::Metrics>,
) -> issuers::Registry {
    let ttl = token_cache::Ttl {
        positive: Duration::from_secs(args.authz_cache_seconds),
        negative: Duration::from_secs(args.authz_negative_cache_seconds),
    };
    let reviewer = |name: &str, client, audiences| {
        token_review::Reviewer::new(
            name,
            client,
            audiences,
            ttl,
            args.authz_cache_entries,
            metrics.clone(),
        )
    };
    let mut clusters = vec![issuers::Cluster::host(
        reviewer("host", host, args.authz_audiences.clone()),
        args.host_issuer.clone(),
    )];
    for vc in virtual_clusters {
        tracing::info!(cluster = %vc.name, host_namespace = %vc.host_namespace, source = %vc.kubeconfig, "virtual cluster");
        let audiences = vc
            .audiences
            .clone()
            .unwrap_or_else(|| args.authz_audiences.clone());
        let r = reviewer(&vc.name, None, audiences);
        clusters.push(issuers::Cluster::virtual_cluster(vc, r));
    }
    issuers::Registry::new(clusters)
}

/// The serving certificate, reread every minute (a rotated Secret) for as long
/// as the process runs.
async fn tls_config(cert: &Path, key: &Path) -> Result<RustlsConfig, String> {
    // Only ring is compiled in; make it the process' provider, as kube-rs' is.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|e| format!("cannot load {} / {}: {e}", cert.display(), key.display()))?;
    tokio::spawn({
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
    Ok(tls)
}

/// Serves `app` on `listen` (HTTPS with `tls`) until `shutdown`.
async fn serve_on(
    listen: SocketAddr,
    app: axum::Router,
    tls: Option<RustlsConfig>,
    shutdown: CancellationToken,
    what: &'static str,
) -> Result<(), String> {
    match tls {
        None => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            tracing::info!(%listen, "serving {what} over HTTP");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .map_err(|e| format!("HTTP server failed: {e}"))
        }
        Some(tls) => {
            let handle = axum_server::Handle::new();
            tokio::spawn({
                let handle = handle.clone();
                async move {
                    shutdown.cancelled().await;
                    handle.graceful_shutdown(Some(Duration::from_secs(5)));
                }
            });
            tracing::info!(%listen, "serving {what} over HTTPS");
            axum_server::bind_rustls(listen, tls)
                .handle(handle)
                .serve(app.into_make_service())
                .await
                .map_err(|e| format!("HTTPS server failed on {listen}: {e}"))
        }
    }
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
