//! Ballista: the SQL stages on a cluster.
//!
//! psla does no scheduling of its own. `psla cluster scheduler` and `psla cluster executor` start
//! Ballista's own scheduler and executor (the `ballista-scheduler` and `ballista-executor` crates,
//! version 55 like the DataFusion psla uses) in the psla binary, so that a cluster runs the same build
//! as its clients. A session opened with [`Engine::Ballista`] (see [`crate::sql::Session`]) plans
//! its queries on the client and sends them to the scheduler, which splits them into stages and runs
//! them on the executors; the results come back over Arrow Flight.
//!
//! What this module adds to Ballista's defaults:
//! - [`Stores`], the object-store registry every process (client, scheduler, executors) uses: it
//!   builds `s3://`, `gs://` and `az://` stores the way the rest of psla does
//!   ([`crate::table::storage`]: each process's own `AWS_*` / `GOOGLE_*` / `AZURE_*` environment and
//!   `--storage-option`), so credentials never travel in query settings;
//! - the complete DataFusion function registry on executors (Ballista's default lacks the nested
//!   functions);
//! - task-failure limits and executor heartbeats suited to short label jobs (a lost executor is
//!   noticed within seconds and its tasks rerun elsewhere).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionConfig;
use object_store::ObjectStore;
use url::Url;

use crate::error::{Error, Result};

/// Where a session's queries run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Engine {
    /// In this process (DataFusion).
    #[default]
    Local,
    /// On the Ballista cluster whose scheduler listens at `addr` (`host:port`), with its scans split
    /// into `partitions` tasks (None: Ballista's default, 16).
    Ballista { addr: String, partitions: Option<usize> },
}

impl Engine {
    /// `local`, or `ballista://HOST:PORT[?partitions=N]` (`df://...`, Ballista's own spelling, too).
    /// `partitions`: the tasks each scan is split into; the cluster's total `--slots` is best for the
    /// label stage, whose pass builds its hash table of needed pairs once per task.
    pub fn parse(s: &str) -> Result<Engine> {
        let s = s.trim();
        if s.is_empty() || s == "local" {
            return Ok(Engine::Local);
        }
        let rest = s.strip_prefix("ballista://").or_else(|| s.strip_prefix("df://"));
        let bad = || {
            Error::invalid(format!(
                "engine `{s}`: expected `local` or `ballista://HOST:PORT[?partitions=N]` (a Ballista scheduler, \
                 e.g. ballista://127.0.0.1:50050, started with `psla cluster scheduler`)"
            ))
        };
        let rest = rest.ok_or_else(bad)?;
        let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
        let addr = addr.trim_end_matches('/');
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        let partitions = match query {
            "" => None,
            q => match q.strip_prefix("partitions=").map(|n| n.parse::<usize>()) {
                Some(Ok(n)) if n > 0 => Some(n),
                _ => return Err(bad()),
            },
        };
        Ok(Engine::Ballista { addr: addr.to_string(), partitions })
    }

    pub fn is_local(&self) -> bool {
        *self == Engine::Local
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Local => write!(f, "local"),
            Engine::Ballista { addr, partitions: None } => write!(f, "ballista://{addr}"),
            Engine::Ballista { addr, partitions: Some(n) } => write!(f, "ballista://{addr}?partitions={n}"),
        }
    }
}

/// The object-store registry of every psla process: stores registered by name, else built on first
/// use from the URL (see the module docs).
#[derive(Debug, Default)]
pub struct Stores {
    registered: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

fn store_key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""))
}

impl ObjectStoreRegistry for Stores {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.registered.write().expect("store registry lock").insert(store_key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        self.registered
            .write()
            .expect("store registry lock")
            .remove(&store_key(url))
            .ok_or_else(|| DataFusionError::Execution(format!("no object store registered for {url}")))
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        if let Some(store) = self.registered.read().expect("store registry lock").get(&store_key(url)) {
            return Ok(store.clone());
        }
        crate::table::storage::store_for(url).map(|(store, _)| store).map_err(|e| DataFusionError::External(Box::new(e)))
    }
}

/// A runtime whose object stores come from [`Stores`], spilling under `temp_dir` when given.
pub fn runtime_env(temp_dir: Option<&str>) -> DfResult<Arc<RuntimeEnv>> {
    let mut builder = RuntimeEnvBuilder::new().with_object_store_registry(Arc::new(Stores::default()));
    if let Some(dir) = temp_dir {
        builder = builder.with_temp_file_path(dir);
    }
    builder.build_arc()
}

/// The session configuration of every psla process on a cluster.
pub fn session_config() -> SessionConfig {
    use ballista::prelude::SessionConfigExt;
    let mut config = SessionConfig::new_with_ballista();
    // As in the local engine (crate::sql::Session::empty): results keep their string types and order.
    config.options_mut().optimizer.expand_views_at_output = false;
    config
}

/// The session state the scheduler plans each job in: Ballista's defaults, psla's stores.
fn scheduler_session(config: SessionConfig) -> DfResult<SessionState> {
    use ballista_core::extension::{ballista_aggregate_functions, ballista_scalar_functions, ballista_window_functions};
    Ok(SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime_env(None)?)
        .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
        .with_scalar_functions(ballista_scalar_functions())
        .with_aggregate_functions(ballista_aggregate_functions())
        .with_window_functions(ballista_window_functions())
        .build())
}

/// The client side: a session state whose queries run on the scheduler at `addr` (`host:port`).
pub async fn client_context(addr: &str, config: SessionConfig) -> Result<datafusion::prelude::SessionContext> {
    use ballista::prelude::SessionContextExt;
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime_env(None)?)
        .build();
    datafusion::prelude::SessionContext::remote_with_state(&format!("df://{addr}"), state)
        .await
        .map_err(|e| Error::Sql(format!("cannot use the Ballista scheduler at {addr}: {e}")))
}

/// Timing settings of a cluster (seconds). The defaults notice a dead executor within ~10 s.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How often an executor tells the scheduler it is alive.
    pub heartbeat: u64,
    /// An executor silent for this long is dead: its tasks are rerun elsewhere.
    pub executor_timeout: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { heartbeat: 2, executor_timeout: 10 }
    }
}

/// Run Ballista's scheduler on `bind` until the process is stopped. `external_host` is the name
/// executors and clients reach this machine by (`bind`'s address when None).
pub fn run_scheduler(bind: SocketAddr, external_host: Option<String>, timing: &Timing) -> Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    let external = external_host.unwrap_or_else(|| bind.ip().to_string());
    let config = SchedulerConfig {
        bind_host: bind.ip().to_string(),
        bind_port: bind.port(),
        external_host: external.clone(),
        executor_timeout_seconds: timing.executor_timeout,
        expire_dead_executor_interval_seconds: 1,
        no_executors_grace_period_seconds: timing.executor_timeout * 3,
        task_max_failures: 4,
        stage_max_failures: 4,
        override_config_producer: Some(Arc::new(session_config)),
        override_session_builder: Some(Arc::new(scheduler_session)),
        ..Default::default()
    };
    cluster_runtime()?.block_on(async move {
        let cluster = BallistaCluster::new_from_config(&config)
            .await
            .map_err(|e| Error::invalid(format!("cannot set up the Ballista scheduler: {e}")))?;
        eprintln!(
            "psla cluster scheduler (Ballista {}, DataFusion {}) listening on {bind}; executors and clients use {external}:{}",
            ballista_core::BALLISTA_VERSION,
            datafusion::DATAFUSION_VERSION,
            bind.port()
        );
        tokio::select! {
            r = ballista_scheduler::scheduler_process::start_server(cluster, bind, Arc::new(config)) =>
                r.map_err(|e| Error::invalid(format!("the Ballista scheduler on {bind} stopped: {e}"))),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

/// What `psla cluster executor` needs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler, `host:port`.
    pub scheduler: String,
    /// Address to listen on (both ports bind there).
    pub bind_host: String,
    /// The name the scheduler and clients reach this executor by.
    pub external_host: Option<String>,
    /// Arrow Flight port: shuffle data and results.
    pub flight_port: u16,
    /// gRPC port the scheduler pushes tasks to.
    pub grpc_port: u16,
    /// Concurrent tasks (0: one per core).
    pub slots: usize,
    /// Shuffle files and spills.
    pub work_dir: std::path::PathBuf,
    pub timing: Timing,
}

/// Run a Ballista executor until the process is stopped.
pub fn run_executor(opts: ExecutorOptions) -> Result<()> {
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let (host, port) = opts
        .scheduler
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| Error::invalid(format!("--scheduler `{}`: expected HOST:PORT", opts.scheduler)))?;
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| Error::file(&opts.work_dir, None, e))?;
    let work_dir = opts.work_dir.to_string_lossy().into_owned();
    let spill_dir = work_dir.clone();
    // Every DataFusion function, as in the client's session (Ballista's default registry lacks the nested ones).
    let functions = {
        let state = SessionStateBuilder::new().with_default_features().build();
        Arc::new(ballista_core::registry::BallistaFunctionRegistry::from(&state))
    };
    let config = ExecutorProcessConfig {
        bind_host: opts.bind_host.clone(),
        external_host: opts.external_host.clone().or_else(|| Some(opts.bind_host.clone())),
        port: opts.flight_port,
        grpc_port: opts.grpc_port,
        scheduler_host: host,
        scheduler_port: port,
        vcores: opts.slots,
        work_dir: Some(work_dir),
        executor_heartbeat_interval_seconds: opts.timing.heartbeat,
        override_config_producer: Some(Arc::new(session_config)),
        override_runtime_producer: Some(Arc::new(move |_: &SessionConfig| runtime_env(Some(&spill_dir)))),
        override_function_registry: Some(functions),
        ..Default::default()
    };
    eprintln!(
        "psla cluster executor: scheduler {}, flight {}:{}, grpc {}:{}, work dir {}",
        opts.scheduler,
        opts.bind_host,
        opts.flight_port,
        opts.bind_host,
        opts.grpc_port,
        opts.work_dir.display()
    );
    cluster_runtime()?.block_on(async move {
        start_executor_process(Arc::new(config))
            .await
            .map_err(|e| Error::invalid(format!("the Ballista executor stopped: {e}")))
    })
}

/// The runtime a scheduler or executor runs on (Ballista's binaries use 32 MiB thread stacks: deep plans).
fn cluster_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(32 * 1024 * 1024)
        .build()
        .map_err(|e| Error::invalid(format!("cannot start a tokio runtime: {e}")))
}

/// An error unless something accepts connections at the scheduler address `addr` within 5 s.
pub async fn check_scheduler(addr: &str) -> Result<()> {
    let connect = tokio::net::TcpStream::connect(addr);
    match tokio::time::timeout(std::time::Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::invalid(format!(
            "no Ballista scheduler answers at {addr} ({e}): start one with `psla cluster scheduler --bind {addr}`, \
             or run on this machine with --engine local"
        ))),
        Err(_) => Err(Error::invalid(format!("the Ballista scheduler at {addr} did not answer within 5 s"))),
    }
}
