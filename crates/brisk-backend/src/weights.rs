//! Loading the weights of a Llama-family model from GGUF or safetensors into one layout.
//!
//! Matrices stay in the file's format (quantized GGUF blocks or dense f32) behind candle's
//! `QMatMul`; vectors (norms, biases) and the token embedding are dequantized to f32 once,
//! since they are read row by row. Both formats go through one loader keyed by a tensor's
//! role, so shape checks and error messages are the same whatever the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use brisk_gguf::{GgmlDType, GgufFile};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::config::{Architecture, ModelConfig, RopeScaling};
use crate::kernels::{conversion, Conversion, KernelChoice, QuantMatrix};
use crate::ModelError;

/// How a matrix is multiplied: brisk's batched kernels where it has them, candle otherwise.
enum MatmulImpl {
    Native(QuantMatrix),
    Candle(QMatMul),
}

/// A weight matrix `[out, in]` with an optional bias, applied as `x @ W^T + b`.
pub(crate) struct Linear {
    weight: MatmulImpl,
    bias: Option<Vec<f32>>,
    pub(crate) out_dim: usize,
    pub(crate) in_dim: usize,
}

impl Linear {
    /// `x` holds `rows` rows of `in_dim` values; returns `rows` rows of `out_dim`.
    pub(crate) fn forward(&self, x: &[f32], rows: usize) -> candle_core::Result<Vec<f32>> {
        debug_assert_eq!(x.len(), rows * self.in_dim);
        let mut out = match &self.weight {
            MatmulImpl::Native(w) => {
                let mut out = vec![0.0; rows * self.out_dim];
                w.matmul(x, rows, &mut out);
                out
            }
            MatmulImpl::Candle(w) => {
                let xs = Tensor::from_slice(x, (rows, self.in_dim), &Device::Cpu)?;
                w.forward(&xs)?.flatten_all()?.to_vec1::<f32>()?
            }
        };
        if let Some(bias) = &self.bias {
            for row in out.chunks_exact_mut(self.out_dim) {
                for (o, b) in row.iter_mut().zip(bias) {
                    *o += b;
                }
            }
        }
        Ok(out)
    }
}

/// Projections of one input: fused into one product when brisk's kernels hold them all
/// (one pass over the activations, one parallel section instead of several), separate
/// otherwise.
pub(crate) enum Projections {
    Fused { linear: Linear, widths: Vec<usize> },
    Separate(Vec<Linear>),
}

impl Projections {
    fn new(parts: Vec<Linear>) -> Self {
        let natives: Option<Vec<&QuantMatrix>> = parts
            .iter()
            .map(|l| match &l.weight {
                MatmulImpl::Native(m) => Some(m),
                MatmulImpl::Candle(_) => None,
            })
            .collect();
        let Some(fused) = natives.and_then(|n| QuantMatrix::concat_rows(&n)) else {
            return Self::Separate(parts);
        };
        let widths: Vec<usize> = parts.iter().map(|l| l.out_dim).collect();
        let bias = parts.iter().any(|l| l.bias.is_some()).then(|| {
            parts
                .iter()
                .flat_map(|l| l.bias.clone().unwrap_or_else(|| vec![0.0; l.out_dim]))
                .collect()
        });
        Self::Fused {
            linear: Linear {
                weight: MatmulImpl::Native(fused),
                bias,
                out_dim: widths.iter().sum(),
                in_dim: parts[0].in_dim,
            },
            widths,
        }
    }

    /// Each projection of the `rows` rows of `x`, in order.
    pub(crate) fn forward(&self, x: &[f32], rows: usize) -> candle_core::Result<Vec<Vec<f32>>> {
        match self {
            Self::Separate(parts) => parts.iter().map(|l| l.forward(x, rows)).collect(),
            Self::Fused { linear, widths } => {
                let all = linear.forward(x, rows)?;
                let mut outs: Vec<Vec<f32>> = widths
                    .iter()
                    .map(|w| Vec::with_capacity(w * rows))
                    .collect();
                for row in all.chunks_exact(linear.out_dim) {
                    let mut offset = 0;
                    for (out, w) in outs.iter_mut().zip(widths) {
                        out.extend_from_slice(&row[offset..offset + w]);
                        offset += w;
                    }
                }
                Ok(outs)
            }
        }
    }
}

/// One transformer layer.
pub(crate) struct LayerWeights {
    pub(crate) attn_norm: Vec<f32>,
    /// Q, K and V.
    pub(crate) qkv: Projections,
    pub(crate) o: Linear,
    pub(crate) ffn_norm: Vec<f32>,
    /// Gate and up.
    pub(crate) gate_up: Projections,
    pub(crate) down: Linear,
}

/// All weights of a model.
pub(crate) struct ModelWeights {
    /// `[vocab, hidden]`, f32.
    pub(crate) embedding: Vec<f32>,
    pub(crate) layers: Vec<LayerWeights>,
    pub(crate) output_norm: Vec<f32>,
    pub(crate) lm_head: Linear,
    /// Per-frequency RoPE divisors from GGUF's `rope_freqs.weight`, if present.
    pub(crate) rope_freq_factors: Option<Vec<f32>>,
}

/// The roles a tensor can play; each format maps them to its own names.
#[derive(Clone, Copy)]
enum Role {
    Embedding,
    OutputNorm,
    LmHead,
    AttnNorm,
    Q,
    K,
    V,
    O,
    QBias,
    KBias,
    VBias,
    FfnNorm,
    Gate,
    Up,
    Down,
    RopeFreqs,
}

/// A file format's view of the weights.
trait WeightSource {
    fn path(&self) -> &Path;
    fn name(&self, role: Role, layer: usize) -> String;
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The tensor as candle's matmul operand (quantized stays quantized; dense is used as it
    /// is, without another copy).
    fn candle_matmul(&self, name: &str) -> Result<QMatMul, ModelError>;
    /// The tensor dequantized to f32, flattened.
    fn f32_values(&self, name: &str) -> Result<Vec<f32>, ModelError>;
    /// The tensor's ggml type and raw blocks, for formats stored as ggml blocks.
    fn raw_ggml(&self, _name: &str) -> Option<(GgmlDType, &[u8])> {
        None
    }
}

fn tensor_error(path: &Path, tensor: &str, e: &candle_core::Error) -> ModelError {
    ModelError::Tensor {
        path: path.to_path_buf(),
        tensor: tensor.to_string(),
        message: e.to_string(),
    }
}

struct GgufSource<'a> {
    file: &'a GgufFile,
}

impl GgufSource<'_> {
    /// The tensor's ggml blocks as a candle tensor.
    fn qtensor(&self, name: &str) -> Result<Arc<QTensor>, ModelError> {
        let info = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path().to_path_buf(),
                tensor: name.to_string(),
            })?;
        let bytes = self.file.tensor_bytes(info);
        qtensor_from_ggml(info.dtype.into(), bytes, info.shape(), &Device::Cpu)
            .map(Arc::new)
            .map_err(|e| tensor_error(self.path(), name, &e))
    }
}

impl WeightSource for GgufSource<'_> {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn name(&self, role: Role, layer: usize) -> String {
        let blk = |s: &str| format!("blk.{layer}.{s}");
        match role {
            Role::Embedding => "token_embd.weight".into(),
            Role::OutputNorm => "output_norm.weight".into(),
            Role::LmHead => "output.weight".into(),
            Role::RopeFreqs => "rope_freqs.weight".into(),
            Role::AttnNorm => blk("attn_norm.weight"),
            Role::Q => blk("attn_q.weight"),
            Role::K => blk("attn_k.weight"),
            Role::V => blk("attn_v.weight"),
            Role::O => blk("attn_output.weight"),
            Role::QBias => blk("attn_q.bias"),
            Role::KBias => blk("attn_k.bias"),
            Role::VBias => blk("attn_v.bias"),
            Role::FfnNorm => blk("ffn_norm.weight"),
            Role::Gate => blk("ffn_gate.weight"),
            Role::Up => blk("ffn_up.weight"),
            Role::Down => blk("ffn_down.weight"),
        }
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.file.tensor(name).map(brisk_gguf::TensorInfo::shape)
    }

    fn candle_matmul(&self, name: &str) -> Result<QMatMul, ModelError> {
        QMatMul::from_arc(self.qtensor(name)?).map_err(|e| tensor_error(self.path(), name, &e))
    }

    fn raw_ggml(&self, name: &str) -> Option<(GgmlDType, &[u8])> {
        let info = self.file.tensor(name)?;
        Some((info.dtype, self.file.tensor_bytes(info)))
    }

    fn f32_values(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        let q = self.qtensor(name)?;
        q.dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| tensor_error(self.path(), name, &e))
    }
}

struct SafetensorsSource {
    dir: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl SafetensorsSource {
    fn open(dir: &Path) -> Result<Self, ModelError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| ModelError::Format {
                path: dir.to_path_buf(),
                message: format!("cannot list directory: {e}"),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ModelError::NotFound {
                path: dir.join("model.safetensors"),
            });
        }
        let mut tensors = HashMap::new();
        for file in &files {
            let loaded = candle_core::safetensors::load(file, &Device::Cpu).map_err(|e| {
                ModelError::Format {
                    path: file.clone(),
                    message: format!("invalid safetensors file: {e}"),
                }
            })?;
            tensors.extend(loaded);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tensors,
        })
    }

    fn get(&self, name: &str) -> Result<Tensor, ModelError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.dir.clone(),
                tensor: name.to_string(),
            })?;
        match t.dtype() {
            DType::F32 | DType::F16 | DType::BF16 => t
                .to_dtype(DType::F32)
                .map_err(|e| tensor_error(&self.dir, name, &e)),
            other => Err(ModelError::UnsupportedTensorType {
                path: self.dir.clone(),
                tensor: name.to_string(),
                dtype: format!("{other:?}"),
            }),
        }
    }
}

impl WeightSource for SafetensorsSource {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn name(&self, role: Role, layer: usize) -> String {
        let l = |s: &str| format!("model.layers.{layer}.{s}");
        match role {
            Role::Embedding => "model.embed_tokens.weight".into(),
            Role::OutputNorm => "model.norm.weight".into(),
            Role::LmHead => "lm_head.weight".into(),
            Role::RopeFreqs => "rope_freqs.weight".into(),
            Role::AttnNorm => l("input_layernorm.weight"),
            Role::Q => l("self_attn.q_proj.weight"),
            Role::K => l("self_attn.k_proj.weight"),
            Role::V => l("self_attn.v_proj.weight"),
            Role::O => l("self_attn.o_proj.weight"),
            Role::QBias => l("self_attn.q_proj.bias"),
            Role::KBias => l("self_attn.k_proj.bias"),
            Role::VBias => l("self_attn.v_proj.bias"),
            Role::FfnNorm => l("post_attention_layernorm.weight"),
            Role::Gate => l("mlp.gate_proj.weight"),
            Role::Up => l("mlp.up_proj.weight"),
            Role::Down => l("mlp.down_proj.weight"),
        }
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|t| t.dims().to_vec())
    }

    fn candle_matmul(&self, name: &str) -> Result<QMatMul, ModelError> {
        Ok(QMatMul::Tensor(self.get(name)?))
    }

    fn f32_values(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        self.get(name)?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| tensor_error(&self.dir, name, &e))
    }
}

struct Loader<'a> {
    src: &'a dyn WeightSource,
}

impl Loader<'_> {
    fn check_shape(&self, name: &str, expected: &[usize]) -> Result<(), ModelError> {
        let found = self
            .src
            .shape(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.src.path().to_path_buf(),
                tensor: name.to_string(),
            })?;
        if found != expected {
            return Err(ModelError::ShapeMismatch {
                path: self.src.path().to_path_buf(),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                found,
            });
        }
        Ok(())
    }

    fn vector(&self, role: Role, layer: usize, len: usize) -> Result<Vec<f32>, ModelError> {
        let name = self.src.name(role, layer);
        self.check_shape(&name, &[len])?;
        self.src.f32_values(&name)
    }

    fn linear(
        &self,
        role: Role,
        bias: Option<Role>,
        layer: usize,
        out_dim: usize,
        in_dim: usize,
    ) -> Result<Linear, ModelError> {
        let name = self.src.name(role, layer);
        self.check_shape(&name, &[out_dim, in_dim])?;
        let weight = match native_matrix(self.src, &name, out_dim, in_dim)? {
            Some(m) => MatmulImpl::Native(m),
            None => MatmulImpl::Candle(self.src.candle_matmul(&name)?),
        };
        let bias = bias.map(|b| self.vector(b, layer, out_dim)).transpose()?;
        Ok(Linear {
            weight,
            bias,
            out_dim,
            in_dim,
        })
    }
}

/// Whether to use brisk's kernels (`BRISK_KERNELS=candle` forces candle's, for comparisons;
/// a path this CPU cannot run is refused).
fn native_kernels_enabled() -> Result<bool, ModelError> {
    match KernelChoice::from_env() {
        Ok(choice) => Ok(choice != KernelChoice::Candle),
        Err(message) => Err(ModelError::Kernels(message)),
    }
}

/// The matrix in brisk's kernel layout, for every quantized type (exactly where the type
/// allows, else requantized to Q8_0; see `kernels::convert`). Dense matrices stay with candle.
fn native_matrix(
    src: &dyn WeightSource,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<Option<QuantMatrix>, ModelError> {
    if !native_kernels_enabled()? {
        return Ok(None);
    }
    let Some((dtype, raw)) = src.raw_ggml(name) else {
        return Ok(None);
    };
    Ok(match conversion(dtype) {
        Conversion::Exact => QuantMatrix::from_ggml_exact(dtype, rows, cols, raw),
        Conversion::Requantize => QuantMatrix::requantize_q8_0(rows, cols, &src.f32_values(name)?),
        Conversion::None => None,
    })
}

/// Loads the weights of a GGUF file.
pub(crate) fn load_gguf(file: &GgufFile, config: &ModelConfig) -> Result<ModelWeights, ModelError> {
    load(&GgufSource { file }, config)
}

/// Loads the weights of a Hugging Face directory (all `*.safetensors` files in it).
pub(crate) fn load_safetensors(
    dir: &Path,
    config: &ModelConfig,
) -> Result<ModelWeights, ModelError> {
    load(&SafetensorsSource::open(dir)?, config)
}

fn load(src: &dyn WeightSource, c: &ModelConfig) -> Result<ModelWeights, ModelError> {
    let loader = Loader { src };
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let (q_dim, kv_dim) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
    let biased = c.architecture == Architecture::Qwen2;
    let bias = |r: Role| biased.then_some(r);

    let embed_name = src.name(Role::Embedding, 0);
    loader.check_shape(&embed_name, &[c.vocab_size, h])?;
    let embedding = src.f32_values(&embed_name)?;

    // Tied embeddings: models without an output matrix reuse the embedding (SmolLM2).
    let lm_head_name = src.name(Role::LmHead, 0);
    let lm_head = if src.shape(&lm_head_name).is_some() {
        loader.linear(Role::LmHead, None, 0, c.vocab_size, h)?
    } else {
        let weight = match native_matrix(src, &embed_name, c.vocab_size, h)? {
            Some(m) => MatmulImpl::Native(m),
            None => MatmulImpl::Candle(src.candle_matmul(&embed_name)?),
        };
        Linear {
            weight,
            bias: None,
            out_dim: c.vocab_size,
            in_dim: h,
        }
    };

    let layers = (0..c.num_layers)
        .map(|i| {
            Ok(LayerWeights {
                attn_norm: loader.vector(Role::AttnNorm, i, h)?,
                qkv: Projections::new(vec![
                    loader.linear(Role::Q, bias(Role::QBias), i, q_dim, h)?,
                    loader.linear(Role::K, bias(Role::KBias), i, kv_dim, h)?,
                    loader.linear(Role::V, bias(Role::VBias), i, kv_dim, h)?,
                ]),
                o: loader.linear(Role::O, None, i, h, q_dim)?,
                ffn_norm: loader.vector(Role::FfnNorm, i, h)?,
                gate_up: Projections::new(vec![
                    loader.linear(Role::Gate, None, i, f, h)?,
                    loader.linear(Role::Up, None, i, f, h)?,
                ]),
                down: loader.linear(Role::Down, None, i, h, f)?,
            })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;

    let rope_name = src.name(Role::RopeFreqs, 0);
    let rope_freq_factors = match (&c.rope_scaling, src.shape(&rope_name)) {
        (RopeScaling::FreqFactors(f), _) => Some(f.clone()),
        (_, Some(_)) => Some(loader.vector(Role::RopeFreqs, 0, c.head_dim / 2)?),
        _ => None,
    };

    Ok(ModelWeights {
        embedding,
        layers,
        output_norm: loader.vector(Role::OutputNorm, 0, h)?,
        lm_head,
        rope_freq_factors,
    })
}
