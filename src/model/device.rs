//! Device names (`auto`, `cpu`, `cuda`, `cuda:N`), shared by the train and score stages.

use tch::Device;

use crate::error::{Error, Result};

/// The device a name asks for, checked for syntax only (`auto` is CUDA device 0 when libtorch sees one).
pub fn parse_name(s: &str) -> Result<Device> {
    match s.trim() {
        "auto" => Ok(if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(Device::Cuda)
            .ok_or_else(|| Error::invalid(format!("device `{other}`: use auto, cpu, cuda or cuda:N"))),
    }
}

/// The device a name asks for, which must exist: a CUDA device needs libtorch to see that many.
pub fn parse(s: &str) -> Result<Device> {
    let device = parse_name(s)?;
    if let Device::Cuda(i) = device {
        if !tch::Cuda::is_available() {
            return Err(Error::invalid(format!("device `{s}`: no CUDA device is available (use cpu or auto)")));
        }
        let n = tch::Cuda::device_count() as usize;
        if i >= n {
            return Err(Error::invalid(format!("device `{s}`: only {n} CUDA device(s), numbered from 0")));
        }
    }
    Ok(device)
}

/// `cpu` or `cuda:N`, for summaries.
pub fn name(d: Device) -> String {
    match d {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Cpu => "cpu".into(),
        other => format!("{other:?}"),
    }
}
