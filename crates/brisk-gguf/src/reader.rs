//! Bounds-checked GGUF reader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{GgmlDType, GgufError, MetaValue};

const MAGIC: [u8; 4] = *b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Arrays nest at most this deep; deeper nesting is treated as corruption.
const MAX_ARRAY_DEPTH: usize = 4;

/// One entry of the tensor directory.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the contiguous (row) dimension.
    pub dims: Vec<u64>,
    /// Element type.
    pub dtype: GgmlDType,
    /// Offset of the data from the start of the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn num_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Dimensions in row-major (PyTorch) order: outermost first.
    pub fn shape(&self) -> Vec<usize> {
        self.dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect()
    }
}

/// A GGUF file read into memory, with its metadata and tensor directory.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    /// Metadata key-value pairs.
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
}

impl GgufFile {
    /// Reads and validates a GGUF file: header, metadata, tensor directory, and that every
    /// tensor's data lies inside the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|source| GgufError::Open {
            path: path.clone(),
            source,
        })?;
        Self::parse(path, bytes)
    }

    /// Parses a GGUF image already in memory; `path` is used in error messages.
    pub fn parse(path: PathBuf, bytes: Vec<u8>) -> Result<Self, GgufError> {
        let mut cur = Cursor {
            bytes: &bytes,
            pos: 0,
            path: &path,
        };
        let magic: [u8; 4] = cur.take(4, "the GGUF magic")?.try_into().expect("4 bytes");
        if magic != MAGIC {
            return Err(GgufError::BadMagic { path, found: magic });
        }
        let version = cur.u32("the GGUF version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion {
                path,
                found: version,
            });
        }
        let tensor_count = cur.u64("the tensor count")?;
        let kv_count = cur.u64("the metadata count")?;

        let mut metadata = BTreeMap::new();
        for i in 0..kv_count {
            let key = cur.string(&format!("metadata key #{i}"))?;
            let value_type = cur.u32(&key)?;
            let value = cur.value(value_type, &key, 0)?;
            metadata.insert(key, value);
        }

        let mut tensors = Vec::new();
        for i in 0..tensor_count {
            let name = cur.string(&format!("tensor name #{i}"))?;
            let n_dims = cur.u32(&name)?;
            if n_dims == 0 || n_dims > 4 {
                return Err(cur.malformed(format!("tensor {name:?} has {n_dims} dimensions")));
            }
            let dims = (0..n_dims)
                .map(|_| cur.u64(&name))
                .collect::<Result<Vec<_>, _>>()?;
            let type_id = cur.u32(&name)?;
            let dtype =
                GgmlDType::from_id(type_id).ok_or_else(|| GgufError::UnsupportedTensorType {
                    path: path.clone(),
                    tensor: name.clone(),
                    type_id,
                })?;
            let offset = cur.u64(&name)?;
            let elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| cur.malformed(format!("tensor {name:?} dims {dims:?} overflow")))?;
            let size = dtype
                .row_bytes(dims[0])
                .and_then(|row| row.checked_mul(elements / dims[0].max(1)))
                .ok_or_else(|| {
                    cur.malformed(format!(
                        "tensor {name:?}: row of {} elements is not a whole number of {dtype:?} blocks, or its size overflows",
                        dims[0]
                    ))
                })?;
            tensors.push(TensorInfo {
                name,
                dims,
                dtype,
                offset,
                size,
            });
        }

        let alignment = match metadata.get("general.alignment") {
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| cur.malformed(format!("general.alignment {v:?}")))?,
            None => DEFAULT_ALIGNMENT,
        };
        let data_start = (cur.pos as u64).div_ceil(alignment) * alignment;
        let file_len = bytes.len() as u64;
        for t in &mut tensors {
            let start = data_start.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.size));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => t.offset = start,
                _ => {
                    return Err(GgufError::Truncated {
                        path,
                        what: format!("the data of tensor {:?}", t.name),
                        offset: data_start.saturating_add(t.offset),
                        needed: t.size,
                        file_len,
                    })
                }
            }
        }
        Ok(Self {
            path,
            version,
            metadata,
            tensors,
            bytes,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// A tensor's directory entry by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's raw bytes (already checked to lie inside the file).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = usize::try_from(info.offset).expect("checked against the file length");
        let len = usize::try_from(info.size).expect("checked against the file length");
        &self.bytes[start..start + len]
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// A string metadata value by key.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetaValue::as_str)
    }

    /// An integer metadata value by key.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(MetaValue::as_u64)
    }

    /// A numeric metadata value by key.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(MetaValue::as_f64)
    }

    /// A string-array metadata value by key (e.g. `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> Option<Vec<&str>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(MetaValue::as_str)
            .collect()
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl Cursor<'_> {
    fn take(&mut self, n: u64, what: &str) -> Result<&[u8], GgufError> {
        let remaining = (self.bytes.len() - self.pos) as u64;
        if n > remaining {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n,
                file_len: self.bytes.len() as u64,
            });
        }
        let n = usize::try_from(n).expect("n <= remaining, which is a usize");
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let raw = self.take(len, what)?.to_vec();
        String::from_utf8(raw).map_err(|_| self.malformed(format!("{what}: string is not UTF-8")))
    }

    fn malformed(&self, message: String) -> GgufError {
        GgufError::Malformed {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn value(&mut self, type_id: u32, what: &str, depth: usize) -> Result<MetaValue, GgufError> {
        Ok(match type_id {
            0 => MetaValue::U8(u8::from_le_bytes(self.array(what)?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(what)?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => MetaValue::U32(self.u32(what)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.malformed(format!("{what}: bool byte {b}"))),
            },
            8 => MetaValue::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.malformed(format!("{what}: arrays nested too deep")));
                }
                let item_type = self.u32(what)?;
                let len = self.u64(what)?;
                // Every item takes at least one byte: a length beyond the rest of the file is
                // corruption, caught here before any allocation.
                if len > (self.bytes.len() - self.pos) as u64 {
                    return Err(GgufError::Truncated {
                        path: self.path.to_path_buf(),
                        what: what.to_string(),
                        offset: self.pos as u64,
                        needed: len,
                        file_len: self.bytes.len() as u64,
                    });
                }
                // `len` items fit in what remains of the file (checked above).
                let mut items = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                for _ in 0..len {
                    items.push(self.value(item_type, what, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            t => return Err(self.malformed(format!("{what}: unknown metadata value type {t}"))),
        })
    }
}
