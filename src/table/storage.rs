//! Where bytes live: local paths and object-store URLs (`s3://`, `gs://`, `az://`, `file://`), one
//! [`ObjectStore`] per bucket, configured the way object_store users expect.
//!
//! ## Configuration
//! A store is built from the environment first (object_store's own variables: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`,
//! `AZURE_STORAGE_ACCOUNT_NAME`, ...), then from the `--storage-option key=value` flags, which win.
//! The keys are object_store's configuration keys for the URL's scheme (`aws_endpoint` or `endpoint`,
//! `region`, `allow_http`, `google_service_account`, `azure_storage_account_name`, ...); a key the
//! scheme does not know is an error naming it, never ignored.
//!
//! ## Errors
//! Store errors are turned into messages that say what to check: a missing bucket, refused
//! credentials, an unreachable endpoint ([`explain`]).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use super::runtime;
use crate::error::{Error, Result};

/// The `--storage-option` pairs of this process, in the order given.
static OPTIONS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
/// One store per `scheme://bucket`, shared by every root, table and file in it.
static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();

/// Set the storage options of this process from `key=value` strings (the CLI's
/// `--storage-option`). Stores built before keep their configuration.
pub fn set_options(pairs: &[String]) -> Result<()> {
    let mut parsed = Vec::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            Error::invalid(format!("--storage-option `{pair}` is not key=value (e.g. aws_region=eu-west-1)"))
        })?;
        let k = k.trim().to_ascii_lowercase();
        if k.is_empty() {
            return Err(Error::invalid(format!("--storage-option `{pair}` has an empty key")));
        }
        parsed.push((k, v.to_string()));
    }
    *OPTIONS.lock().expect("storage options lock") = parsed;
    STORES.get_or_init(Default::default).lock().expect("store cache lock").clear();
    Ok(())
}

fn options() -> Vec<(String, String)> {
    OPTIONS.lock().expect("storage options lock").clone()
}

/// True when `location` is an object-store URL (not a local path nor a file:// URL).
pub fn is_remote(location: &str) -> bool {
    location.contains("://") && !location.starts_with("file://")
}

/// The local path of a local location (a path or a file:// URL); None for object-store URLs.
pub fn local_path(location: &str) -> Option<std::path::PathBuf> {
    if !location.contains("://") {
        return Some(std::path::PathBuf::from(location));
    }
    Url::parse(location).ok().filter(|u| u.scheme() == "file").and_then(|u| u.to_file_path().ok())
}

/// The store that holds `url` and the path of `url` inside it. Stores are cached per bucket.
pub fn store_for(url: &Url) -> Result<(Arc<dyn ObjectStore>, StorePath)> {
    let scheme = url.scheme();
    let path = StorePath::from_url_path(url.path())
        .map_err(|e| Error::invalid(format!("`{url}` has a path object stores cannot hold: {e}")))?;
    if scheme == "file" {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new());
        return Ok((store, path));
    }
    let bucket = url.host_str().unwrap_or_default();
    if bucket.is_empty() {
        return Err(Error::invalid(format!("`{url}` names no bucket (expected {scheme}://BUCKET/PREFIX)")));
    }
    let key = format!("{scheme}://{bucket}");
    let cache = STORES.get_or_init(Default::default);
    if let Some(store) = cache.lock().expect("store cache lock").get(&key) {
        return Ok((store.clone(), path));
    }
    let store = build(url, &options())?;
    cache.lock().expect("store cache lock").insert(key, store.clone());
    Ok((store, path))
}

/// Build the store of `url`'s bucket: environment first, then `options` (see the module docs).
fn build(url: &Url, options: &[(String, String)]) -> Result<Arc<dyn ObjectStore>> {
    let unknown = |key: &str, scheme: &str, examples: &str| {
        Error::invalid(format!(
            "--storage-option `{key}` is not an option of {scheme}:// stores (options are object_store's \
             configuration keys, e.g. {examples})"
        ))
    };
    let built: std::result::Result<Arc<dyn ObjectStore>, object_store::Error> = match url.scheme() {
        "s3" | "s3a" => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
            let mut b = AmazonS3Builder::from_env().with_url(url.as_str());
            for (k, v) in options {
                let key = AmazonS3ConfigKey::from_str(k)
                    .map_err(|_| unknown(k, "s3", "aws_endpoint, aws_region, aws_access_key_id, aws_allow_http"))?;
                b = b.with_config(key, v);
            }
            b.build().map(|s| Arc::new(s) as _)
        }
        "gs" => {
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            for (k, v) in options {
                let key = GoogleConfigKey::from_str(k)
                    .map_err(|_| unknown(k, "gs", "google_service_account, google_application_credentials"))?;
                b = b.with_config(key, v);
            }
            b.build().map(|s| Arc::new(s) as _)
        }
        "az" | "abfs" | "abfss" | "azure" | "adl" => {
            use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
            let mut b = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            for (k, v) in options {
                let key = AzureConfigKey::from_str(k)
                    .map_err(|_| unknown(k, "az", "azure_storage_account_name, azure_storage_account_key"))?;
                b = b.with_config(key, v);
            }
            b.build().map(|s| Arc::new(s) as _)
        }
        other => {
            return Err(Error::invalid(format!(
                "`{url}`: unsupported scheme `{other}://` (psla reads and writes local paths, file://, s3://, gs:// and az://)"
            )));
        }
    };
    built.map_err(|e| Error::invalid(format!("cannot configure the store of `{url}`: {e}")))
}

/// A user-facing message for a store error on `url`: what failed and what to check.
pub fn explain(url: &str, e: &object_store::Error) -> String {
    let text = e.to_string();
    let has = |s: &str| text.contains(s);
    if has("NoSuchBucket") || has("ContainerNotFound") || (has("bucket") && has("does not exist")) {
        let bucket = Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
        return format!(
            "{url}: the bucket `{bucket}` does not exist (or this endpoint does not serve it); create it first, \
             or check the URL and the endpoint (AWS_ENDPOINT / --storage-option aws_endpoint=...)"
        );
    }
    let denied = matches!(e, object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. })
        || ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden", "401 Unauthorized"]
            .iter()
            .any(|s| has(s));
    if denied {
        return format!(
            "{url}: access denied: the store refused the credentials ({}). Check AWS_ACCESS_KEY_ID / \
             AWS_SECRET_ACCESS_KEY (or GOOGLE_* / AZURE_*), or pass --storage-option \
             aws_access_key_id=... aws_secret_access_key=...",
            short(&text)
        );
    }
    if has("error sending request") || has("Connection refused") || has("dns error") || has("timed out") {
        return format!(
            "{url}: cannot reach the store ({}); check the endpoint (AWS_ENDPOINT / --storage-option \
             aws_endpoint=...) and, for http:// endpoints, aws_allow_http=true",
            short(&text)
        );
    }
    format!("{url}: {text}")
}

/// The first line of an error text, at most 300 characters.
fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(300).collect()
}

/// Map a store error on `url` to a psla error with [`explain`]'s message (NotFound stays NotFound).
pub fn context(url: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::ObjectStore(e),
        other => Error::invalid(explain(url, &other)),
    }
}

/// The whole content of a local path or object-store URL.
pub fn read(location: &str) -> Result<Bytes> {
    if let Some(path) = local_path(location) {
        return std::fs::read(&path).map(Bytes::from).map_err(|e| Error::file(path, None, e));
    }
    let url = Url::parse(location).map_err(|e| Error::invalid(format!("`{location}` is not a URL: {e}")))?;
    let (store, path) = store_for(&url)?;
    runtime().block_on(async {
        match store.get(&path).await {
            Ok(r) => r.bytes().await.map_err(|e| context(location, e)),
            Err(object_store::Error::NotFound { .. }) => Err(Error::file(location, None, "no such object")),
            Err(e) => Err(context(location, e)),
        }
    })
}

/// Write `bytes` to a local path (through a temporary file and a rename) or an object-store URL
/// (one put): either way a reader sees the old content or the new, never a part.
pub fn write(location: &str, bytes: Vec<u8>) -> Result<()> {
    if let Some(path) = local_path(location) {
        let tmp = std::path::PathBuf::from(format!("{}.tmp", path.display()));
        std::fs::write(&tmp, &bytes).map_err(|e| Error::file(&tmp, None, e))?;
        return std::fs::rename(&tmp, &path).map_err(|e| Error::file(&path, None, e));
    }
    let url = Url::parse(location).map_err(|e| Error::invalid(format!("`{location}` is not a URL: {e}")))?;
    let (store, path) = store_for(&url)?;
    runtime().block_on(store.put(&path, PutPayload::from(bytes))).map_err(|e| context(location, e))?;
    Ok(())
}

/// Whether a local path or object-store URL exists.
pub fn exists(location: &str) -> Result<bool> {
    if let Some(path) = local_path(location) {
        return Ok(path.exists());
    }
    let url = Url::parse(location).map_err(|e| Error::invalid(format!("`{location}` is not a URL: {e}")))?;
    let (store, path) = store_for(&url)?;
    match runtime().block_on(store.head(&path)) {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(context(location, e)),
    }
}

/// The URLs of the objects directly under the object-store folder `url` (not recursive), sorted.
pub fn list_dir(url: &str) -> Result<Vec<String>> {
    let mut parsed = Url::parse(url).map_err(|e| Error::invalid(format!("`{url}` is not a URL: {e}")))?;
    if !parsed.path().ends_with('/') {
        parsed.set_path(&format!("{}/", parsed.path()));
    }
    let (store, prefix) = store_for(&parsed)?;
    let listing = runtime().block_on(store.list_with_delimiter(Some(&prefix))).map_err(|e| context(url, e))?;
    let mut out: Vec<String> = listing
        .objects
        .iter()
        .filter_map(|m| m.location.filename().and_then(|name| parsed.join(name).ok()).map(|u| u.to_string()))
        .collect();
    out.sort();
    Ok(out)
}

/// The folder where local copies of objects live: `$PSLA_CACHE_DIR` (default `~/.cache/psla`).
fn cache_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("PSLA_CACHE_DIR") {
        return std::path::PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("psla")
}

fn short_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// A local file with the content of `location`, for readers that need a path (libtorch,
/// safetensors): a local location is itself; an object is downloaded once into
/// `$PSLA_CACHE_DIR/objects/`, keyed by its URL, size and ETag, so a changed object is fetched again.
pub fn materialize(location: &str) -> Result<std::path::PathBuf> {
    if let Some(path) = local_path(location) {
        return Ok(path);
    }
    let url = Url::parse(location).map_err(|e| Error::invalid(format!("`{location}` is not a URL: {e}")))?;
    let (store, path) = store_for(&url)?;
    let meta = runtime().block_on(store.head(&path)).map_err(|e| match e {
        object_store::Error::NotFound { .. } => Error::file(location, None, "no such object"),
        e => context(location, e),
    })?;
    let name = path.filename().unwrap_or("object");
    let key = short_hash(&format!("{location}\n{}\n{}", meta.size, meta.e_tag.as_deref().unwrap_or("")));
    let dir = cache_dir().join("objects");
    std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, None, e))?;
    let local = dir.join(format!("{key}-{name}"));
    if !local.exists() {
        write(&local.to_string_lossy(), read(location)?.to_vec())?;
    }
    Ok(local)
}

/// A local working folder that mirrors an object-store folder, for writers that need local files
/// (training writes checkpoints with libtorch): [`Mirror::pull`] makes the local folder hold what
/// the remote one does, [`Mirror::push`] uploads one file (one put each: a reader of the remote
/// folder sees a file whole or not at all).
pub struct Mirror {
    remote: String,
    local: std::path::PathBuf,
}

impl Mirror {
    /// The mirror of the object-store folder `remote` (a URL), in `$PSLA_CACHE_DIR/mirrors/`.
    pub fn new(remote: &str) -> Result<Mirror> {
        let remote = format!("{}/", remote.trim_end_matches('/'));
        let local = cache_dir().join("mirrors").join(short_hash(&remote));
        std::fs::create_dir_all(&local).map_err(|e| Error::file(&local, None, e))?;
        Ok(Mirror { remote, local })
    }

    pub fn local(&self) -> &std::path::Path {
        &self.local
    }

    /// Make the local folder a copy of the remote one: files the remote lacks are removed, missing
    /// or differing ones downloaded. Returns the files downloaded.
    pub fn pull(&self) -> Result<usize> {
        let url = Url::parse(&self.remote).map_err(|e| Error::invalid(format!("`{}`: {e}", self.remote)))?;
        let (store, prefix) = store_for(&url)?;
        let listing = runtime().block_on(store.list_with_delimiter(Some(&prefix))).map_err(|e| context(&self.remote, e))?;
        let remote: HashMap<String, u64> =
            listing.objects.iter().filter_map(|m| Some((m.location.filename()?.to_string(), m.size))).collect();
        for entry in std::fs::read_dir(&self.local).map_err(|e| Error::file(&self.local, None, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !remote.contains_key(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let mut fetched = 0;
        for (name, size) in &remote {
            let path = self.local.join(name);
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == *size) {
                continue;
            }
            write(&path.to_string_lossy(), read(&format!("{}{name}", self.remote))?.to_vec())?;
            fetched += 1;
        }
        Ok(fetched)
    }

    /// Upload the local file `name` to the remote folder.
    pub fn push(&self, name: &str) -> Result<()> {
        let path = self.local.join(name);
        let bytes = std::fs::read(&path).map_err(|e| Error::file(&path, None, e))?;
        write(&format!("{}{name}", self.remote), bytes)
    }

    /// Remove `name` from both folders (a missing file is not an error).
    pub fn remove(&self, name: &str) -> Result<()> {
        let _ = std::fs::remove_file(self.local.join(name));
        let url = Url::parse(&format!("{}{name}", self.remote)).map_err(|e| Error::invalid(format!("{e}")))?;
        let (store, path) = store_for(&url)?;
        match runtime().block_on(store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(context(url.as_str(), e)),
        }
    }
}
