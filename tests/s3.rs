//! Run roots on a real S3 server: s3s-fs (an S3 implementation over a folder, from crates.io) started
//! in this test process on 127.0.0.1, with SigV4 credentials. psla runs as a child process and is
//! configured the way object_store users configure it: AWS_* environment variables, or
//! `--storage-option`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::common::*;

pub(crate) const ACCESS_KEY: &str = "psla-test-access";
pub(crate) const SECRET_KEY: &str = "psla-test-secret-key";
pub(crate) const BUCKET: &str = "psla-test";

/// The S3 server of this test process.
pub(crate) struct S3 {
    pub(crate) endpoint: String,
    /// The folder s3s-fs serves: `<data>/<bucket>/<key>`.
    pub(crate) data: PathBuf,
}

pub(crate) fn s3() -> &'static S3 {
    static SERVER: OnceLock<S3> = OnceLock::new();
    SERVER.get_or_init(|| {
        let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("s3-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(data.join(BUCKET)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let root = data.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs over the data folder");
                let mut builder = s3s::service::S3ServiceBuilder::new(fs);
                builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
                let service = builder.build();
                // s3s-fs checks `If-None-Match: *` and then writes (a temporary file renamed over the
                // key), so two conditional puts of one key racing each other can both succeed, the
                // later one replacing the earlier. S3 itself (and GCS, Azure) decides such puts
                // atomically, and psla's commits rely on that (src/table/store.rs), so this server
                // makes its conditional puts one at a time: without that, shards committing at once
                // here could lose a commit that real S3 would have refused and psla retried.
                let conditional = std::sync::Arc::new(tokio::sync::Mutex::new(()));
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (service, conditional) = (service.clone(), conditional.clone());
                    async move {
                        let is_conditional = req.method() == hyper::Method::PUT
                            && (req.headers().contains_key("if-none-match") || req.headers().contains_key("if-match"));
                        let _one_at_a_time = if is_conditional { Some(conditional.lock().await) } else { None };
                        hyper::service::Service::call(&service, req).await
                    }
                });
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                loop {
                    let Ok((socket, _)) = listener.accept().await else { continue };
                    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone()).into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
        });
        let addr = rx.recv().expect("the S3 server starts");
        S3 { endpoint: format!("http://{addr}"), data }
    })
}

/// `psla` configured for the test server through the environment.
pub(crate) fn psla_s3() -> Command {
    let mut c = psla();
    c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_ENDPOINT", &s3().endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE");
    c
}

/// A fresh root URL in the test bucket, and its folder on the server's disk.
pub(crate) fn new_root(name: &str) -> (String, PathBuf) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let key = format!("{name}-{}", N.fetch_add(1, Ordering::Relaxed));
    (format!("s3://{BUCKET}/runs/{key}"), s3().data.join(BUCKET).join("runs").join(key))
}

/// (table, rows, content_hash) of every table of a manifest.
pub(crate) fn tables_of(manifest: &serde_json::Value) -> Vec<(String, u64, String)> {
    let mut out: Vec<_> = manifest["tables"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["rows"].as_u64().unwrap(), v["content_hash"].as_str().unwrap().to_string()))
        .collect();
    out.sort();
    out
}

/// The committed manifest of a root on disk (local, or the server's folder of an S3 root): the
/// highest generation of `_manifests/`.
pub(crate) fn committed(dir: &Path) -> serde_json::Value {
    let log = dir.join("_manifests");
    let mut entries: Vec<_> = std::fs::read_dir(&log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    entries.sort();
    let last = entries.last().expect("a committed generation");
    serde_json::from_slice(&std::fs::read(log.join(last)).unwrap()).unwrap()
}

fn pipeline(demo_data: &Path) -> String {
    format!(
        r#"
[pipeline]
name = "s3_parity"

[stage.demo_data]
out = "{data}"
seed = 5
train_clips = 40
eval_clips = 16
clip_seconds = 1.0

[stage.ingest]
segments = ["{data}/train_segments.csv", "{data}/eval_segments.csv"]
classes = "{data}/class_labels_indices.csv"
ontology = "{data}/ontology.json"
audio = "{data}/audio"

[stage.features]
sample_rate = 16000

[stage.label]
threshold = "mean"
rules = "type1,type2"
splits = ["train"]
tables = {{ predictions = "demo_teacher" }}

[stage.sample]
epochs = 2
seed = 3
tables = {{ labels = "labels_enhanced" }}

[stage.train_tiny]
kind = "train"
config = "demo_cpu"
name = "tiny"
epochs = 1
threads = 1
device = "cpu"
train_splits = ["train"]
tables = {{ labels = "labels_enhanced", eval_labels = "labels", train_metrics = "train_metrics_tiny" }}

[stage.score_tiny]
kind = "score"
checkpoint = "${{root}}/models/tiny/epoch-01.safetensors"
device = "cpu"
splits = ["eval"]
tables = {{ predictions = "predictions_tiny" }}
"#,
        data = demo_data.display()
    )
}

#[test]
fn a_pipeline_on_an_s3_root_writes_the_same_tables_as_on_a_local_root() {
    let dir = tempdir();
    let spec = dir.path().join("s3_parity.toml");
    std::fs::write(&spec, pipeline(&dir.path().join("demo_data"))).unwrap();

    let local = dir.path().join("local");
    run_ok(psla().arg("run").arg(&spec).arg("--root").arg(&local));
    let (url, on_disk) = new_root("parity");
    let t0 = Instant::now();
    let out = run_ok(psla_s3().arg("run").arg(&spec).args(["--root", &url]));
    eprintln!("pipeline on {url}: {:.1} s", t0.elapsed().as_secs_f64());

    let (local_tables, s3_tables) = (tables_of(&committed(&local)), tables_of(&committed(&on_disk)));
    let names: Vec<&str> = s3_tables.iter().map(|t| t.0.as_str()).collect();
    for t in ["clips", "labels", "features", "features_rejects", "labels_enhanced", "label_thresholds", "sample_weights"] {
        assert!(names.contains(&t), "{t} missing on S3: {names:?}\n{}", stderr(&out));
    }
    assert!(s3_tables.iter().all(|t| t.0.ends_with("_rejects") || t.1 > 0), "{s3_tables:?}");
    assert!(names.contains(&"predictions_tiny") && names.contains(&"train_metrics_tiny"), "{names:?}");
    // Byte-identical Parquet: the same rows, order, schema and encoding; the training metrics hold
    // timings, so they are compared without them.
    let timeless = |t: &Vec<(String, u64, String)>| -> Vec<(String, u64, String)> {
        t.iter().map(|(n, r, h)| (n.clone(), *r, if n.starts_with("train_metrics") { String::new() } else { h.clone() })).collect()
    };
    assert_eq!(timeless(&s3_tables), timeless(&local_tables));
    let metrics = "SELECT model, epoch, steps, round(train_loss, 6) AS loss, checkpoint FROM train_metrics_tiny ORDER BY epoch";
    let on_s3 = stdout(&run_ok(psla_s3().args(["sql", metrics, "--root", &url, "--format", "csv"])));
    assert_eq!(on_s3.lines().map(String::from).collect::<Vec<_>>(), sql_csv(&local, metrics));
    // The checkpoints were uploaded to the bucket (their weights are the local run's: the
    // predictions_tiny tables, scored from them, are byte-identical above).
    for file in ["epoch-01.safetensors", "epoch-01.optim.safetensors", "train_state.json"] {
        assert!(on_disk.join("models/tiny").join(file).exists(), "{file} not uploaded");
    }
    // manifest.json, the hint for people and tools, matches the log.
    let hint: serde_json::Value = serde_json::from_slice(&std::fs::read(on_disk.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(tables_of(&hint), s3_tables);

    // SQL over the S3 root (DataFusion reading the store) answers as over the local root.
    let query = "SELECT origin, count(*) AS n, round(avg(score), 6) AS s FROM labels_enhanced GROUP BY origin ORDER BY origin";
    let on_s3 = stdout(&run_ok(psla_s3().args(["sql", query, "--root", &url, "--format", "csv"])));
    assert_eq!(on_s3.lines().map(String::from).collect::<Vec<_>>(), sql_csv(&local, query));
    assert!(on_s3.lines().count() >= 3, "{on_s3}");

    // A rerun on the S3 root finds every stage up to date.
    let again = stderr(&run_ok(psla_s3().arg("run").arg(&spec).args(["--root", &url])));
    assert!(!again.contains("running"), "{again}");
    assert_eq!(tables_of(&committed(&on_disk)), s3_tables);
}

fn ingest(csv: &Path, root: &str) -> Command {
    let mut c = psla_s3();
    c.arg("ingest")
        .arg("--segments")
        .arg(csv)
        .args(["--classes", &audioset("class_labels_indices.csv"), "--ontology", &audioset("ontology.json")])
        .args(["--out", root]);
    c
}

#[test]
fn a_run_killed_on_an_s3_root_leaves_the_previous_version_readable_and_a_rerun_completes() {
    let dir = tempdir();
    let big = dir.path().join("big").join("segments.csv");
    let small = dir.path().join("small").join("segments.csv");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    std::fs::create_dir_all(small.parent().unwrap()).unwrap();
    big_csv(&big, 6);
    std::fs::copy(audioset("balanced_train_segments.csv"), &small).unwrap();

    // The reference: an uninterrupted big ingest on its own S3 root.
    let (clean_url, clean_dir) = new_root("clean");
    let t0 = Instant::now();
    run_ok(&mut ingest(&big, &clean_url));
    let duration = t0.elapsed();
    let expected_new = tables_of(&committed(&clean_dir));

    let (url, on_disk) = new_root("killed");
    run_ok(&mut ingest(&small, &url));
    let previous = tables_of(&committed(&on_disk));
    assert_ne!(previous, expected_new);
    let count = |url: &str| -> u64 {
        let out = run_ok(psla_s3().args(["sql", "SELECT count(*) AS n FROM clips", "--root", url, "--format", "csv"]));
        stdout(&out).lines().nth(1).unwrap().trim().parse().unwrap()
    };

    let mut saw_previous = 0;
    for i in 1..=8 {
        let delay = duration.mul_f64(i as f64 / 8.0);
        let mut child = ingest(&big, &url).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let now = tables_of(&committed(&on_disk));
        assert!(now == previous || now == expected_new, "kill at {delay:?} left a mixed state: {now:?}");
        if now == previous {
            saw_previous += 1;
            assert_eq!(count(&url), 22_160, "the previous version stays readable");
        } else {
            assert_eq!(count(&url), 22_160 * 6);
            run_ok(&mut ingest(&small, &url));
        }
    }
    assert!(saw_previous >= 2, "the kills should mostly land before the commit ({saw_previous} of 8 did)");

    run_ok(&mut ingest(&big, &url));
    assert_eq!(tables_of(&committed(&on_disk)), expected_new);
    // One version folder per table is left, and the log keeps a bounded number of generations.
    for (name, _, _) in &expected_new {
        // (s3s-fs keeps a folder once its objects are deleted; an object store has no folders.)
        let versions = std::fs::read_dir(on_disk.join("tables").join(name))
            .unwrap()
            .filter(|e| std::fs::read_dir(e.as_ref().unwrap().path()).unwrap().next().is_some())
            .count();
        assert_eq!(versions, 1, "{name}");
    }
    let generations = std::fs::read_dir(on_disk.join("_manifests")).unwrap().count();
    assert!((2..=10).contains(&generations), "{generations} generations kept");
}

#[test]
fn wrong_credentials_a_missing_bucket_and_a_bad_option_give_clear_errors() {
    let (url, on_disk) = new_root("errors");
    let csv = audioset("balanced_train_segments.csv");
    let ingest_args = |c: &mut Command| {
        c.args(["ingest", "--segments", &csv, "--classes", &audioset("class_labels_indices.csv")])
            .args(["--ontology", &audioset("ontology.json"), "--out"]);
    };

    let mut c = psla_s3();
    ingest_args(&mut c);
    let err = run_err(c.arg(&url).env("AWS_SECRET_ACCESS_KEY", "not-the-secret"));
    assert!(err.contains("access denied") && err.contains(&url), "{err}");
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "says what to check: {err}");
    assert!(!on_disk.exists(), "nothing written");

    let mut c = psla_s3();
    ingest_args(&mut c);
    let err = run_err(c.arg("s3://no-such-bucket/run"));
    assert!(err.contains("bucket `no-such-bucket` does not exist"), "{err}");
    assert!(!s3().data.join("no-such-bucket").exists(), "no bucket created");

    let err = run_err(psla_s3().args(["tables", "--root", &url, "--storage-option", "aws_no_such_key=1"]));
    assert!(err.contains("aws_no_such_key") && err.contains("s3://"), "{err}");
    let err = run_err(psla_s3().args(["tables", "--root", &url, "--storage-option", "novalue"]));
    assert!(err.contains("`novalue` is not key=value"), "{err}");
}

#[test]
fn storage_options_configure_the_store_without_environment_variables() {
    let (url, on_disk) = new_root("options");
    let mut c = psla();
    c.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY").env_remove("AWS_ENDPOINT");
    for opt in [
        format!("aws_access_key_id={ACCESS_KEY}"),
        format!("aws_secret_access_key={SECRET_KEY}"),
        format!("aws_endpoint={}", s3().endpoint),
        "aws_allow_http=true".to_string(),
        "aws_region=us-east-1".to_string(),
    ] {
        c.args(["--storage-option", &opt]);
    }
    c.args(["ingest", "--segments", &audioset("balanced_train_segments.csv")])
        .args(["--classes", &audioset("class_labels_indices.csv"), "--ontology", &audioset("ontology.json")])
        .args(["--out", &url]);
    run_ok(&mut c);
    let tables = tables_of(&committed(&on_disk));
    assert!(tables.iter().any(|t| t.0 == "clips" && t.1 == 22_160), "{tables:?}");
}

/// What psla's commits rely on (src/table/store.rs): of several writers creating one object at once
/// with `PutMode::Create` (`If-None-Match: *` on S3, an exclusive create on a local disk), exactly one
/// succeeds and the object holds its bytes. Real S3 decides this atomically; the test server is made
/// to (see [`s3`]), and this checks it and the local store.
#[test]
fn concurrent_conditional_creates_of_one_key_let_exactly_one_writer_win() {
    use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
    let dir = tempdir();
    let local: std::sync::Arc<dyn ObjectStore> =
        std::sync::Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let s3_store: std::sync::Arc<dyn ObjectStore> = std::sync::Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&s3().endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(BUCKET)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    for (round, store) in (0..10).map(|r| (r, if r % 2 == 0 { &s3_store } else { &local })) {
        let key = object_store::path::Path::from(format!("races/key-{round}.json"));
        let results = rt.block_on(async {
            let puts = (0..12).map(|w| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    // A payload large enough that writing it takes a while on the server.
                    let body = vec![b'a' + w as u8; 256 * 1024];
                    let create = PutOptions { mode: PutMode::Create, ..Default::default() };
                    (w, store.put_opts(&key, PutPayload::from(body), create).await)
                })
            });
            futures::future::join_all(puts).await
        });
        let mut winners = Vec::new();
        for r in results {
            match r.unwrap() {
                (w, Ok(_)) => winners.push(w),
                (_, Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. })) => {}
                (w, Err(e)) => panic!("writer {w}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: writers {winners:?} all created {key}");
        let got = rt.block_on(async { store.get(&key).await.unwrap().bytes().await.unwrap() });
        assert!(got.iter().all(|&b| b == b'a' + winners[0] as u8), "round {round}: {key} holds another writer's bytes");
    }
}
