//! Checkpoints: safetensors files with PSLA's state-dict keys, and psla's metadata in the header.
//!
//! A file psla writes holds every variable of the model's `VarStore` under PSLA's key names, BatchNorm
//! `num_batches_tracked` (int64) included, so a PyTorch user loads it into PSLA's `EffNetAttention`
//! unchanged with `model.load_state_dict(safetensors.torch.load_file(path))` (strict). The safetensors
//! header's `__metadata__` (string to string) holds:
//!
//! | key | value |
//! | --- | --- |
//! | `format` | `psla-checkpoint-1` |
//! | `arch` | `efficientnet-b0` .. `efficientnet-b7` |
//! | `heads` | 0 (mean pooling), 1 (attention), H > 1 (multi-head) |
//! | `classes` | JSON array of the class ids (mids); the position is the class index |
//! | `epoch` | the training epoch (absent when not from training) |
//! | `config` | JSON: the training configuration |
//! | `norm_mean`, `norm_std` | input normalisation the model was trained with |
//! | `target_frames` | frames per clip the model was trained with |
//! | `psla_version` | the psla version that wrote the file |
//!
//! Loading is strict: every variable of the model must be in the file with its shape, and the file may
//! hold nothing else (`num_batches_tracked` is optional on reading). Errors name the key.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::Arch;
use crate::error::{Error, Result, WithPath};

/// The `format` metadata value of the files this version writes.
pub const FORMAT: &str = "psla-checkpoint-1";

/// What a psla checkpoint says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    pub arch: Arch,
    pub heads: usize,
    /// Class ids (mids); the index in this list is the model's class index. Empty when unknown.
    pub classes: Vec<String>,
    pub epoch: Option<u32>,
    /// The training configuration (free-form JSON).
    pub config: serde_json::Value,
    pub norm_mean: f64,
    pub norm_std: f64,
    pub target_frames: i64,
}

impl CheckpointMeta {
    /// The safetensors `__metadata__` map.
    pub fn to_header(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("format".into(), FORMAT.into());
        m.insert("arch".into(), self.arch.to_string());
        m.insert("heads".into(), self.heads.to_string());
        m.insert("classes".into(), serde_json::to_string(&self.classes).expect("strings serialise"));
        if let Some(e) = self.epoch {
            m.insert("epoch".into(), e.to_string());
        }
        m.insert("config".into(), self.config.to_string());
        // `{}` of an f64 is the shortest text that parses back to the same value.
        m.insert("norm_mean".into(), format!("{}", self.norm_mean));
        m.insert("norm_std".into(), format!("{}", self.norm_std));
        m.insert("target_frames".into(), self.target_frames.to_string());
        m.insert("psla_version".into(), env!("CARGO_PKG_VERSION").into());
        m
    }

    /// Parse the `__metadata__` map of `path` (for error messages).
    pub fn from_header(m: &HashMap<String, String>, path: &Path) -> Result<CheckpointMeta> {
        let get = |key: &str| {
            m.get(key).ok_or_else(|| {
                Error::file(path, None, format!("checkpoint metadata lacks `{key}`: is this a psla checkpoint? (a PSLA/PyTorch state dict needs --arch and --heads)"))
            })
        };
        let bad = |key: &str, e: &dyn std::fmt::Display| Error::file(path, None, format!("checkpoint metadata `{key}`: {e}"));
        let format = get("format")?;
        if format != FORMAT {
            return Err(bad("format", &format!("`{format}` is not `{FORMAT}`: written by another psla version?")));
        }
        let arch: Arch = get("arch")?.parse().map_err(|e: String| bad("arch", &e))?;
        let heads = get("heads")?.parse::<usize>().map_err(|e| bad("heads", &e))?;
        let classes: Vec<String> = serde_json::from_str(get("classes")?).map_err(|e| bad("classes", &e))?;
        let epoch = m.get("epoch").map(|e| e.parse::<u32>()).transpose().map_err(|e| bad("epoch", &e))?;
        let config = serde_json::from_str(get("config")?).map_err(|e| bad("config", &e))?;
        let norm_mean = get("norm_mean")?.parse::<f64>().map_err(|e| bad("norm_mean", &e))?;
        let norm_std = get("norm_std")?.parse::<f64>().map_err(|e| bad("norm_std", &e))?;
        let target_frames = get("target_frames")?.parse::<i64>().map_err(|e| bad("target_frames", &e))?;
        Ok(CheckpointMeta { arch, heads, classes, epoch, config, norm_mean, norm_std, target_frames })
    }
}

/// Write every variable of `vs` under its name, with `meta` in the header. Atomic: the file appears
/// complete (written to a temporary file in the same folder, synced, renamed) or not at all.
pub fn save(vs: &VarStore, path: &Path, meta: &CheckpointMeta) -> Result<()> {
    let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    if !meta.classes.is_empty() {
        if let Some((_, w)) = named.iter().find(|(k, _)| k == "attention.cla.weight" || k == "attention.cla.0.weight") {
            let n = w.size()[0];
            if n as usize != meta.classes.len() {
                return Err(Error::file(path, None, format!("the model has {n} classes but the metadata lists {}", meta.classes.len())));
            }
        }
    }
    write_safetensors(path, &named, &meta.to_header())
}

/// Write named tensors (moved to the CPU) as safetensors with a `__metadata__` map, atomically.
pub fn write_safetensors(path: &Path, named: &[(String, Tensor)], metadata: &HashMap<String, String>) -> Result<()> {
    let views = named
        .iter()
        .map(|(k, t)| Ok((k.clone(), CpuTensor::new(t).map_err(|e| Error::file(path, None, format!("tensor `{k}`: {e}")))?)))
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::tensor::serialize(views, &Some(metadata.clone()))
        .map_err(|e| Error::file(path, None, format!("cannot serialise the checkpoint: {e}")))?;
    write_atomic(path, &bytes)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_path(&dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "checkpoint".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::file(path, None, format!("cannot write the checkpoint: {e}")));
    }
    Ok(())
}

/// A tensor's bytes on the CPU, for safetensors' serializer.
struct CpuTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl CpuTensor {
    fn new(t: &Tensor) -> std::result::Result<CpuTensor, String> {
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let dtype = Dtype::try_from(t.kind()).map_err(|e| e.to_string())?;
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel).map_err(|e| e.to_string())?;
        Ok(CpuTensor { dtype, shape: t.size().iter().map(|&d| d as usize).collect(), data })
    }
}

impl View for CpuTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        (&self.data[..]).into()
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Load a psla checkpoint into `vs` (strict) and return its metadata.
pub fn load(vs: &mut VarStore, path: &Path) -> Result<CheckpointMeta> {
    let bytes = std::fs::read(path).with_path(path)?;
    let meta = parse_meta(&bytes, path)?;
    let st = deserialize(&bytes, path)?;
    copy_into(vs, &st, path, |k| Some(k.to_string()), false)?;
    Ok(meta)
}

/// The metadata of a psla checkpoint, reading only the header.
pub fn read_meta(path: &Path) -> Result<CheckpointMeta> {
    let header = read_header(path)?;
    let map = header_metadata(&header, path)?
        .ok_or_else(|| Error::file(path, None, "no psla metadata in this safetensors file (a PSLA/PyTorch state dict needs --arch and --heads)"))?;
    CheckpointMeta::from_header(&map, path)
}

/// The metadata map of a safetensors file, if it has one (reads only the header).
pub fn read_metadata_map(path: &Path) -> Result<Option<HashMap<String, String>>> {
    header_metadata(&read_header(path)?, path)
}

/// Load a state dict written by PSLA (converted to safetensors): a `module.` prefix (DataParallel) is
/// stripped and `effnet._fc.*` is ignored; otherwise strict. No metadata needed.
pub fn load_psla_state_dict(vs: &mut VarStore, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_path(path)?;
    let st = deserialize(&bytes, path)?;
    copy_into(vs, &st, path, psla_key, false).map(|_| ())
}

/// PSLA's key for one of ours: `module.` stripped, `effnet._fc.*` dropped.
fn psla_key(k: &str) -> Option<String> {
    let k = k.strip_prefix("module.").unwrap_or(k);
    (!k.starts_with("effnet._fc.")).then(|| k.to_string())
}

/// Initialise the backbone from an efficientnet_pytorch ImageNet state dict (keys `_conv_stem.weight`,
/// `_blocks.N....`, ..., `_fc.*`; a `module.` prefix is stripped). Every backbone variable but the stem
/// convolution is loaded (PSLA's stem takes 1 channel, ImageNet's 3: it keeps its fresh initialisation,
/// as efficientnet_pytorch's `_change_in_channels` does); `_fc` is ignored; the heads are untouched.
/// Strict otherwise: a missing or misshaped backbone key (e.g. weights of another variant) is an error.
/// Returns the number of tensors loaded.
pub fn load_imagenet_init(vs: &mut VarStore, path: &Path) -> Result<usize> {
    let bytes = std::fs::read(path).with_path(path)?;
    let st = deserialize(&bytes, path)?;
    let rename = |k: &str| {
        let k = k.strip_prefix("module.").unwrap_or(k);
        let k = k.strip_prefix("effnet.").unwrap_or(k);
        if k.starts_with("_fc.") || k == "_conv_stem.weight" {
            None
        } else {
            Some(format!("effnet.{k}"))
        }
    };
    copy_into(vs, &st, path, rename, true)
}

fn deserialize<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| Error::file(path, None, format!("not a safetensors file: {e:?}")))
}

fn parse_meta(bytes: &[u8], path: &Path) -> Result<CheckpointMeta> {
    let (_, md) = SafeTensors::read_metadata(bytes).map_err(|e| Error::file(path, None, format!("not a safetensors file: {e:?}")))?;
    let map = md
        .metadata()
        .clone()
        .ok_or_else(|| Error::file(path, None, "no psla metadata in this safetensors file (a PSLA/PyTorch state dict needs --arch and --heads)"))?;
    CheckpointMeta::from_header(&map, path)
}

/// The JSON header of a safetensors file.
fn read_header(path: &Path) -> Result<serde_json::Value> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_path(path)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| Error::file(path, None, format!("not a safetensors file: {e}")))?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return Err(Error::file(path, None, format!("not a safetensors file: a header of {n} bytes")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::file(path, None, format!("not a safetensors file: {e}")))?;
    serde_json::from_slice(&header).map_err(|e| Error::file(path, None, format!("not a safetensors file: header: {e}")))
}

fn header_metadata(header: &serde_json::Value, path: &Path) -> Result<Option<HashMap<String, String>>> {
    match header.get("__metadata__") {
        None => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| Error::file(path, None, format!("safetensors `__metadata__` is not a string map: {e}"))),
    }
}

/// Copy the file's tensors into `vs`. `rename` maps a file key to a variable name (None: ignore it).
/// Every variable must be found with its shape (`num_batches_tracked` is optional; with `partial`, only
/// variables some file key maps under the same top-level prefix, i.e. `effnet.` for ImageNet weights,
/// except the ones `rename` drops, are required), and every kept file key must be a variable.
/// Returns the number of tensors copied.
fn copy_into(vs: &mut VarStore, st: &SafeTensors, path: &Path, rename: impl Fn(&str) -> Option<String>, partial: bool) -> Result<usize> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut found: BTreeMap<String, String> = BTreeMap::new(); // variable -> file key
    let mut unexpected = Vec::new();
    let mut dropped = Vec::new();
    let mut names: Vec<&String> = st.names();
    names.sort();
    for key in names {
        match rename(key) {
            None => dropped.push(key.clone()),
            Some(var) if vars.contains_key(&var) => {
                if let Some(prev) = found.insert(var.clone(), key.clone()) {
                    return Err(Error::file(path, None, format!("keys `{prev}` and `{key}` both map to the variable `{var}`")));
                }
            }
            Some(_) => unexpected.push(key.clone()),
        }
    }
    let required = |name: &str| {
        if name.ends_with("num_batches_tracked") {
            return false;
        }
        if partial {
            // ImageNet weights: the backbone minus what `rename` drops (the stem convolution).
            return name.starts_with("effnet.") && name != "effnet._conv_stem.weight";
        }
        true
    };
    let missing: Vec<&String> = vars.keys().filter(|v| required(v) && !found.contains_key(*v)).collect();
    let mut misshaped = Vec::new();
    let mut problems = Vec::new();
    for (var, key) in &found {
        let view = st.tensor(key).map_err(|e| Error::file(path, None, format!("tensor `{key}`: {e:?}")))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let target = &vars[var];
        if shape != target.size() {
            misshaped.push(format!("`{key}` has shape {:?} in the file but {:?} in the model", shape, target.size()));
        }
        if let Err(e) = Kind::try_from(view.dtype()) {
            problems.push(format!("`{key}`: {e}"));
        }
    }
    if !missing.is_empty() || !unexpected.is_empty() || !misshaped.is_empty() || !problems.is_empty() {
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("{} missing: {}", missing.len(), list(missing.iter().map(|s| format!("`{s}`")))));
        }
        if !unexpected.is_empty() {
            parts.push(format!("{} unexpected: {}", unexpected.len(), list(unexpected.iter().map(|s| format!("`{s}`")))));
        }
        if !misshaped.is_empty() {
            parts.push(format!("{} misshaped: {}", misshaped.len(), list(misshaped.into_iter())));
        }
        parts.extend(problems);
        return Err(Error::file(
            path,
            None,
            format!("checkpoint does not fit the model ({}): check --arch, --heads and the class count", parts.join("; ")),
        ));
    }
    let _ = dropped;
    tch::no_grad(|| -> Result<()> {
        for (var, key) in &found {
            let view = st.tensor(key).map_err(|e| Error::file(path, None, format!("tensor `{key}`: {e:?}")))?;
            let src = Tensor::try_from(view).map_err(|e| Error::file(path, None, format!("tensor `{key}`: {e}")))?;
            let mut dst = vars[var].shallow_clone();
            dst.f_copy_(&src.to_kind(dst.kind()).to_device(dst.device()))
                .map_err(|e| Error::file(path, None, format!("tensor `{key}`: {e}")))?;
        }
        Ok(())
    })?;
    Ok(found.len())
}

/// At most 5 items, then "and N more".
fn list(items: impl Iterator<Item = String>) -> String {
    let all: Vec<String> = items.collect();
    let mut s = all.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if all.len() > 5 {
        s.push_str(&format!(" and {} more", all.len() - 5));
    }
    s
}

/// The model a safetensors state dict (psla's or PSLA's own) is for, told from its keys and shapes alone:
/// the classes from `attention.cla[.0].weight`, the heads from `attention.head_weight` /
/// `attention.att.weight`, the variant from the head convolution's channels and the number of blocks.
pub fn infer_config(path: &Path) -> Result<super::ModelConfig> {
    let header = read_header(path)?;
    let obj = header.as_object().ok_or_else(|| Error::file(path, None, "not a safetensors file: the header is not an object"))?;
    let mut shapes: HashMap<String, Vec<i64>> = HashMap::new();
    for (k, v) in obj {
        if k == "__metadata__" {
            continue;
        }
        let key = k.strip_prefix("module.").unwrap_or(k).to_string();
        let shape = v.get("shape").and_then(|s| serde_json::from_value::<Vec<i64>>(s.clone()).ok()).unwrap_or_default();
        shapes.insert(key, shape);
    }
    let first = |keys: &[&str]| keys.iter().find_map(|k| shapes.get(*k).and_then(|s| s.first().copied()));
    let classes = first(&["attention.cla.weight", "attention.cla.0.weight"])
        .ok_or_else(|| Error::file(path, None, "no `attention.cla.weight` nor `attention.cla.0.weight`: not a PSLA model state dict"))?;
    let heads = match shapes.get("attention.head_weight") {
        Some(s) => s.first().copied().unwrap_or(0) as usize,
        None if shapes.contains_key("attention.att.weight") => 1,
        None => 0,
    };
    let channels = first(&["effnet._conv_head.weight"])
        .ok_or_else(|| Error::file(path, None, "no `effnet._conv_head.weight`: not a PSLA EfficientNet state dict"))?;
    let blocks = shapes
        .keys()
        .filter_map(|k| k.strip_prefix("effnet._blocks.")?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1);
    let arch = Arch::ALL
        .into_iter()
        .find(|a| a.channels_out() == channels && super::efficientnet::block_count(*a) == blocks)
        .ok_or_else(|| {
            Error::file(path, None, format!("no EfficientNet variant has {channels} channels out and {blocks} blocks: pass --arch"))
        })?;
    Ok(super::ModelConfig { arch, heads, classes: classes as usize })
}
