//! The SQL stages on a real Ballista cluster: `psla cluster scheduler` and two `psla cluster
//! executor` processes on 127.0.0.1, over run roots in the S3 server of tests/s3.rs.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::s3::{committed, new_root, psla_s3, tables_of};

/// A port nothing listens on now (the OS's choice; released for the process that binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on {port}");
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{what} is not listening on {port} after 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scheduler and executors, killed when dropped.
struct Cluster {
    scheduler: Child,
    executors: Vec<Child>,
    addr: String,
}

impl Cluster {
    /// A scheduler (a dead executor is noticed after `timeout` seconds) and `n` executors with 2 slots each.
    fn start(n: usize, timeout: u64, work: &Path) -> Cluster {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut scheduler = psla_s3()
            .args(["cluster", "scheduler", "--bind", &addr, "--executor-timeout", &timeout.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, "the scheduler", &mut scheduler);
        let mut cluster = Cluster { scheduler, executors: Vec::new(), addr };
        for i in 0..n {
            let (flight, grpc) = (free_port(), free_port());
            let mut executor = psla_s3()
                .args(["cluster", "executor", "--scheduler", &cluster.addr, "--slots", "2", "--heartbeat", "1"])
                .args(["--flight-port", &flight.to_string(), "--grpc-port", &grpc.to_string(), "--work-dir"])
                .arg(work.join(format!("executor-{i}")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            wait_for_port(flight, "an executor", &mut executor);
            wait_for_port(grpc, "an executor", &mut executor);
            cluster.executors.push(executor);
        }
        // Registration happens once the executor's services are up; give it a heartbeat.
        std::thread::sleep(Duration::from_millis(1500));
        cluster
    }

    fn engine(&self) -> String {
        format!("ballista://{}", self.addr)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.executors.iter_mut().chain(std::iter::once(&mut self.scheduler)) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// demo_data (a known-truth AudioSet-like set with a teacher's scores), ingest, and the label
/// stage (Type I + Type II, mean threshold) and an SQL stage that aggregates its output.
fn label_pipeline(demo_data: &Path) -> String {
    format!(
        r#"
[pipeline]
name = "cluster_label"

[stage.demo_data]
out = "{data}"
seed = 11
train_clips = 600
eval_clips = 16
clip_seconds = 0.5

[stage.ingest]
segments = ["{data}/train_segments.csv", "{data}/eval_segments.csv"]
classes = "{data}/class_labels_indices.csv"
ontology = "{data}/ontology.json"

[stage.label]
threshold = "p25"
rules = "type1,type2"
splits = ["train"]
tables = {{ predictions = "demo_teacher" }}

[stage.additions]
kind = "sql"
query = "SELECT origin, via_mid, mid, count(*) AS n FROM labels_enhanced WHERE origin <> 'original' GROUP BY origin, via_mid, mid ORDER BY origin, via_mid, mid"
reads = ["labels_enhanced"]
out = "label_additions"
"#,
        data = demo_data.display()
    )
}

const LABEL_TABLES: [&str; 4] = ["labels_enhanced", "label_thresholds", "label_changes", "label_additions"];

/// (rows, content hash) of the label stage's tables in a committed manifest.
fn label_tables(manifest: &serde_json::Value) -> Vec<(String, u64, String)> {
    tables_of(manifest).into_iter().filter(|t| LABEL_TABLES.contains(&t.0.as_str())).collect()
}

/// Objects under the run root's `_scratch/` (the cluster session's intermediate tables).
fn scratch_files(root: &Path) -> usize {
    fn count(p: &Path) -> usize {
        match std::fs::read_dir(p) {
            Err(_) => 0,
            Ok(rd) => rd.map(|e| e.unwrap().path()).map(|p| if p.is_dir() { count(&p) } else { 1 }).sum(),
        }
    }
    count(&root.join("_scratch"))
}

#[test]
fn the_label_stage_on_a_ballista_cluster_over_s3_equals_the_local_engine_label_for_label() {
    let dir = tempdir();
    let spec = dir.path().join("cluster_label.toml");
    std::fs::write(&spec, label_pipeline(&dir.path().join("demo_data"))).unwrap();
    let cluster = Cluster::start(2, 10, dir.path());

    let (local_url, local_dir) = new_root("engine-local");
    run_ok(psla_s3().arg("run").arg(&spec).args(["--root", &local_url, "--engine", "local"]));
    let (url, on_disk) = new_root("engine-ballista");
    let t0 = Instant::now();
    let out = run_ok(psla_s3().arg("run").arg(&spec).args(["--root", &url, "--engine", &cluster.engine()]));
    eprintln!("pipeline with the SQL stages on the cluster: {:.1} s\n{}", t0.elapsed().as_secs_f64(), stderr(&out));

    let (local, remote) = (label_tables(&committed(&local_dir)), label_tables(&committed(&on_disk)));
    assert_eq!(local.len(), LABEL_TABLES.len(), "{local:?}");
    // The same rows in the same order with the same schema: byte-identical Parquet.
    assert_eq!(remote, local);
    let added = remote.iter().find(|t| t.0 == "label_additions").unwrap().1;
    assert!(added > 10, "the demo's label noise should make the rules add labels: {remote:?}");
    assert_eq!(scratch_files(&on_disk), 0, "the cluster session's intermediate tables are removed");

    // Audits on the cluster answer as in this process.
    let audit = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/audit/label_top_pairs.sql");
    let sql = |engine: &str| {
        stdout(&run_ok(psla_s3().arg("sql").arg("--file").arg(&audit).args(["--root", &url, "--format", "csv", "--engine", engine])))
    };
    let (on_cluster, here) = (sql(&cluster.engine()), sql("local"));
    assert_eq!(on_cluster, here);
    assert_eq!(sql(&format!("{}?partitions=3", cluster.engine())), here);
    assert!(on_cluster.lines().count() > 3, "{on_cluster}");
}

#[test]
fn a_lost_executor_has_its_tasks_rerun_and_with_no_executor_left_the_stage_fails_clearly_and_commits_nothing() {
    let dir = tempdir();
    let spec = dir.path().join("cluster_label.toml");
    std::fs::write(&spec, label_pipeline(&dir.path().join("demo_data"))).unwrap();
    let (local_url, local_dir) = new_root("lost-local");
    run_ok(psla_s3().arg("run").arg(&spec).args(["--root", &local_url]));
    let expected = label_tables(&committed(&local_dir));

    // One executor killed (SIGKILL: no goodbye to the scheduler) while the scheduler still counts
    // it: the tasks it is given fail to launch or never report, and are rerun on the other one.
    let mut cluster = Cluster::start(2, 4, dir.path());
    cluster.executors[0].kill().unwrap();
    cluster.executors[0].wait().unwrap();
    let (url, on_disk) = new_root("lost-one");
    let run = || psla_s3().arg("run").arg(&spec).args(["--root", &url, "--engine", &cluster.engine()]).output().unwrap();
    let out = run();
    let log = stderr(&out);
    match out.status.success() {
        true => assert_eq!(label_tables(&committed(&on_disk)), expected, "{log}"),
        // Retries exhausted: a clear error, and no label table committed.
        false => {
            assert!(log.contains("stage `label`") && log.contains("failed"), "{log}");
            let names: Vec<String> = tables_of(&committed(&on_disk)).into_iter().map(|t| t.0).collect();
            assert!(!names.iter().any(|n| LABEL_TABLES.contains(&n.as_str())), "{names:?}\n{log}");
        }
    }
    eprintln!("with one executor lost: {}", if out.status.success() { "rerun, same tables" } else { "failed clearly" });

    // The last executor gone too: the job fails with the scheduler's reason, and nothing of the
    // label stage is committed.
    cluster.executors[1].kill().unwrap();
    cluster.executors[1].wait().unwrap();
    let (url2, on_disk2) = new_root("lost-all");
    let t0 = Instant::now();
    let err = run_err(psla_s3().arg("run").arg(&spec).args(["--root", &url2, "--engine", &cluster.engine()]));
    eprintln!("with no executor: failed after {:.1} s: {err}", t0.elapsed().as_secs_f64());
    assert!(err.contains("stage `label`"), "{err}");
    assert!(err.to_lowercase().contains("executor"), "the error should say executors are missing: {err}");
    let names: Vec<String> = tables_of(&committed(&on_disk2)).into_iter().map(|t| t.0).collect();
    assert!(names.contains(&"labels".to_string()), "ingest ran: {names:?}");
    assert!(!names.iter().any(|n| LABEL_TABLES.contains(&n.as_str())), "{names:?}");
}

#[test]
fn engine_errors_name_the_problem() {
    let dir = tempdir();
    let port = free_port();
    let spec = dir.path().join("cluster_label.toml");
    std::fs::write(&spec, label_pipeline(&dir.path().join("demo_data"))).unwrap();
    let root = dir.path().join("root");
    let err = run_err(psla().arg("run").arg(&spec).arg("--root").arg(&root).args(["--engine", "spark://x:1"]));
    assert!(err.contains("expected `local` or `ballista://HOST:PORT[?partitions=N]`"), "{err}");
    let err = run_err(psla().arg("run").arg(&spec).arg("--root").arg(&root).args(["--engine", "ballista://h:1?partitions=0"]));
    assert!(err.contains("engine `ballista://h:1?partitions=0`"), "{err}");
    let err = run_err(psla().arg("run").arg(&spec).arg("--root").arg(&root).args(["--engine", &format!("ballista://127.0.0.1:{port}")]));
    assert!(err.contains(&format!("no Ballista scheduler answers at 127.0.0.1:{port}")), "{err}");
    assert!(err.contains("stage `label`"), "{err}");
}
