//! Adam as `torch.optim.Adam` computes it (L2 weight decay added to the gradient, not AdamW), over tch
//! tensors, with its state (first and second moments, step count) saved to and loaded from
//! safetensors so a resumed run continues exactly.
//!
//! For each parameter with a gradient, at step t (counted per parameter from 1):
//! ```text
//! g = grad + weight_decay * p
//! m = beta1 * m + (1 - beta1) * g
//! v = beta2 * v + (1 - beta2) * g^2
//! p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```
//! A parameter without a gradient (unused in the step) is left alone, its step count too, as PyTorch does.

use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Adam over a fixed list of named parameters.
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    params: Vec<Param>,
}

struct Param {
    name: String,
    value: Tensor,
    m: Tensor,
    v: Tensor,
    step: i64,
}

impl Adam {
    /// Over `params` (name, tensor), e.g. a VarStore's trainable variables. Their order is sorted by
    /// name so that the state file does not depend on a hash map's order.
    pub fn new(mut params: Vec<(String, Tensor)>, betas: [f64; 2], eps: f64, weight_decay: f64) -> Self {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let params = params
            .into_iter()
            .map(|(name, value)| {
                let m = tch::no_grad(|| value.zeros_like());
                let v = tch::no_grad(|| value.zeros_like());
                Param { name, value, m, v, step: 0 }
            })
            .collect();
        Adam { beta1: betas[0], beta2: betas[1], eps, weight_decay, params }
    }

    /// The trainable variables of a VarStore, by name.
    pub fn trainable(vs: &tch::nn::VarStore) -> Vec<(String, Tensor)> {
        vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect()
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.value.zero_grad();
        }
    }

    /// One update with learning rate `lr` from the gradients the last backward left.
    pub fn step(&mut self, lr: f64) {
        let (b1, b2, eps, wd) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.value.grad();
                if !grad.defined() {
                    continue;
                }
                p.step += 1;
                let g = if wd != 0.0 { &grad + &p.value * wd } else { grad };
                let _ = p.m.lerp_(&g, 1.0 - b1);
                let _ = p.v.g_mul_scalar_(b2);
                let _ = p.v.g_add_(&(&g * &g * (1.0 - b2)));
                let bc1 = 1.0 - b1.powi(p.step as i32);
                let bc2 = 1.0 - b2.powi(p.step as i32);
                let denom = p.v.sqrt() / bc2.sqrt() + eps;
                let update = &p.m / denom * (lr / bc1);
                let _ = p.value.g_sub_(&update);
            }
        });
    }

    /// Steps taken so far (the largest per-parameter count).
    pub fn steps(&self) -> i64 {
        self.params.iter().map(|p| p.step).max().unwrap_or(0)
    }

    /// The state as named tensors: `m.<param>`, `v.<param>`, `step.<param>` (int64, one element).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.params.len() * 3);
        for p in &self.params {
            out.push((format!("m.{}", p.name), p.m.to_device(tch::Device::Cpu)));
            out.push((format!("v.{}", p.name), p.v.to_device(tch::Device::Cpu)));
            out.push((format!("step.{}", p.name), Tensor::from_slice(&[p.step])));
        }
        out
    }

    /// Restore the state from [`Adam::state_tensors`]' names; every parameter must be there with its shape.
    pub fn load_state(&mut self, tensors: Vec<(String, Tensor)>, origin: &Path) -> Result<()> {
        let mut map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
        for p in &mut self.params {
            let mut take = |key: String| {
                map.remove(&key).ok_or_else(|| {
                    Error::file(origin, None, format!("the optimizer state has no `{key}`: it was written for another model; delete it to start over"))
                })
            };
            let m = take(format!("m.{}", p.name))?;
            let v = take(format!("v.{}", p.name))?;
            let step = take(format!("step.{}", p.name))?;
            if m.size() != p.value.size() || v.size() != p.value.size() {
                return Err(Error::file(origin, None, format!("the optimizer state of `{}` has shape {:?}, the parameter {:?}", p.name, m.size(), p.value.size())));
            }
            tch::no_grad(|| {
                p.m.copy_(&m.to_kind(p.m.kind()));
                p.v.copy_(&v.to_kind(p.v.kind()));
            });
            p.step = step.to_kind(Kind::Int64).int64_value(&[0]);
        }
        Ok(())
    }

    /// Write the state to a safetensors file, atomically (a temporary file, then a rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("safetensors.tmp");
        Tensor::write_safetensors(&self.state_tensors(), &tmp).map_err(|e| Error::file(&tmp, None, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::file(path, None, e))?;
        Ok(())
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let tensors = Tensor::read_safetensors(path).map_err(|e| Error::file(path, None, e))?;
        self.load_state(tensors, path)
    }
}
