//! Parsing and validation of InfluenceNetwork weight files (format version 1).
//!
//! The contract is `docs/weights.md`: safetensors with `layers.{k}.weight` `(out, in)` /
//! `layers.{k}.bias` `(out,)` float32 tensors of a ReLU MLP with 1 to 5 linear layers, the
//! optional `output.cosine_weight` `(1,)` and `bilinear.u` / `bilinear.v` `(r, d)` tensors,
//! and string metadata. Every rule of that document is checked here; a file that breaks
//! one is a [`CoreError::Format`] naming the problem. This is the only validator of the
//! format: `nncift.weights` (Python) calls it through the binding for in-memory weights
//! and reads files through it.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array1, Array2};
use safetensors::tensor::{Dtype, Metadata, SafeTensors};

use crate::error::{CoreError, CoreResult};

/// The value of the `format` metadata key.
pub const FORMAT: &str = "nncift-influence-network";
/// The only `format_version` this crate reads.
pub const FORMAT_VERSION: u32 = 1;
/// Most linear layers a network may have.
pub const MAX_LAYERS: usize = 5;
/// Metadata keys the format defines (and a writer sets); every other key is free-form
/// extra metadata.
pub const FORMAT_KEYS: [&str; 11] = [
    "format",
    "format_version",
    "kind",
    "input_layout",
    "cosine_feature",
    "embedding_dim",
    "embedding_model",
    "label_scale",
    "label_offset",
    "label_name",
    "hidden_sizes",
];

/// `kind` metadata: one value per pair, or one per item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pairwise,
    Pointwise,
}

/// `input_layout` metadata: how the first layer's input is assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[e_i, 0, e_j]` (the paper's code): `in_0 = 2d + 1`, the separator column is dead.
    Paper,
    /// `[e_i, e_j]`: `in_0 = 2d`.
    Concat,
    /// `[e_i]`: `in_0 = d`.
    Pointwise,
}

impl Kind {
    pub fn parse(s: &str) -> CoreResult<Self> {
        match s {
            "pairwise" => Ok(Kind::Pairwise),
            "pointwise" => Ok(Kind::Pointwise),
            _ => Err(fmt_err(format!(
                "kind must be 'pairwise' or 'pointwise', got {s:?}"
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pairwise => "pairwise",
            Kind::Pointwise => "pointwise",
        }
    }
}

impl Layout {
    pub fn parse(s: &str) -> CoreResult<Self> {
        match s {
            "paper" => Ok(Layout::Paper),
            "concat" => Ok(Layout::Concat),
            "pointwise" => Ok(Layout::Pointwise),
            _ => Err(fmt_err(format!(
                "input_layout must be 'paper', 'concat' or 'pointwise', got {s:?}"
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Paper => "paper",
            Layout::Concat => "concat",
            Layout::Pointwise => "pointwise",
        }
    }
    /// `in_0` for embedding dimension `d` (without the cosine feature column).
    pub fn input_dim(self, d: usize) -> usize {
        match self {
            Layout::Paper => 2 * d + 1,
            Layout::Concat => 2 * d,
            Layout::Pointwise => d,
        }
    }
}

/// A validated network. Construct it with [`NetworkWeights::new`] (in-memory arrays) or
/// [`NetworkWeights::from_bytes`] / [`NetworkWeights::from_file`]; every constructor runs
/// the same checks, so a value of this type always satisfies the format contract.
#[derive(Debug, Clone)]
pub struct NetworkWeights {
    /// `(W_k (out_k, in_k), b_k (out_k,))`, torch `nn.Linear` layout.
    pub(crate) layers: Vec<(Array2<f32>, Array1<f32>)>,
    pub(crate) kind: Kind,
    pub(crate) layout: Layout,
    pub(crate) cosine_feature: bool,
    pub(crate) embedding_dim: usize,
    pub(crate) embedding_model: String,
    pub(crate) label_scale: f64,
    pub(crate) label_offset: f64,
    pub(crate) cosine_weight: Option<f32>,
    /// `(U (r, d), V (r, d))`.
    pub(crate) bilinear: Option<(Array2<f32>, Array2<f32>)>,
    pub(crate) label_name: Option<String>,
    /// Every metadata key of the file (or the ones given in memory), as strings.
    pub(crate) metadata: BTreeMap<String, String>,
}

/// Everything but the arrays, for [`NetworkWeights::new`].
#[derive(Debug, Clone)]
pub struct NetworkMeta {
    pub kind: Kind,
    pub layout: Layout,
    pub cosine_feature: bool,
    pub embedding_dim: usize,
    pub embedding_model: String,
    pub label_scale: f64,
    pub label_offset: f64,
    pub label_name: Option<String>,
}

fn fmt_err(msg: impl Into<String>) -> CoreError {
    CoreError::Format(format!("InfluenceNetwork weights: {}", msg.into()))
}

fn check_finite(name: &str, data: &[f32]) -> CoreResult<()> {
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(fmt_err(format!(
            "tensor {name:?} contains a non-finite value ({}) at flat index {i}",
            data[i]
        ))),
    }
}

impl NetworkWeights {
    /// Validate in-memory weights (the checks of a file load, minus the file itself).
    pub fn new(
        layers: Vec<(Array2<f32>, Array1<f32>)>,
        cosine_weight: Option<f32>,
        bilinear: Option<(Array2<f32>, Array2<f32>)>,
        meta: NetworkMeta,
    ) -> CoreResult<Self> {
        let mut metadata = BTreeMap::new();
        metadata.insert("format".into(), FORMAT.into());
        metadata.insert("format_version".into(), FORMAT_VERSION.to_string());
        metadata.insert("kind".into(), meta.kind.as_str().into());
        metadata.insert("input_layout".into(), meta.layout.as_str().into());
        metadata.insert("cosine_feature".into(), meta.cosine_feature.to_string());
        metadata.insert("embedding_dim".into(), meta.embedding_dim.to_string());
        metadata.insert("embedding_model".into(), meta.embedding_model.clone());
        metadata.insert("label_scale".into(), meta.label_scale.to_string());
        metadata.insert("label_offset".into(), meta.label_offset.to_string());
        if let Some(name) = &meta.label_name {
            metadata.insert("label_name".into(), name.clone());
        }
        // As the Python writer stores it (JSON, e.g. "[100]"), so that a scorer built in
        // memory reports the metadata of the file it would have been written to.
        let hidden: Vec<usize> = layers
            .iter()
            .take(layers.len().saturating_sub(1))
            .map(|(w, _)| w.nrows())
            .collect();
        metadata.insert("hidden_sizes".into(), format!("{hidden:?}"));
        let net = NetworkWeights {
            layers,
            kind: meta.kind,
            layout: meta.layout,
            cosine_feature: meta.cosine_feature,
            embedding_dim: meta.embedding_dim,
            embedding_model: meta.embedding_model,
            label_scale: meta.label_scale,
            label_offset: meta.label_offset,
            cosine_weight,
            bilinear,
            label_name: meta.label_name,
            metadata,
        };
        net.validate()?;
        Ok(net)
    }

    /// Add free-form metadata (kept with the weights, written to the file by
    /// `nncift.weights.write_network`); a key the format defines is refused.
    pub fn with_extra_metadata(mut self, extra: BTreeMap<String, String>) -> CoreResult<Self> {
        let clash: Vec<&str> = extra
            .keys()
            .map(String::as_str)
            .filter(|k| FORMAT_KEYS.contains(k))
            .collect();
        if !clash.is_empty() {
            return Err(fmt_err(format!(
                "extra_metadata may not set format keys {clash:?}; use the arguments"
            )));
        }
        self.metadata.extend(extra);
        Ok(self)
    }

    /// The metadata keys the format does not define.
    pub fn extra_metadata(&self) -> BTreeMap<String, String> {
        self.metadata
            .iter()
            .filter(|(k, _)| !FORMAT_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Read and validate a weight file.
    pub fn from_file(path: impl AsRef<Path>) -> CoreResult<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| CoreError::Format(format!("{}: cannot read: {e}", path.display())))?;
        Self::from_bytes(&bytes)
            .map_err(|e| CoreError::Format(format!("{}: {}", path.display(), strip_kind(&e))))
    }

    /// Parse and validate the bytes of a safetensors weight file.
    pub fn from_bytes(bytes: &[u8]) -> CoreResult<Self> {
        // safetensors 0.8 validates the offsets, then adds `data end + 8 + header length`
        // unchecked: a header whose tensors claim ~2^64 bytes overflows there (a panic where
        // overflow checks are on). Parse the header first and refuse data that runs past the
        // end of the file, which such a header always does (found by tests/prop_weights.rs).
        let pre = parse_header(bytes);
        if let Some((n, m)) = &pre {
            let room = bytes.len() - 8 - n;
            if m.data_len() > room {
                return Err(fmt_err(format!(
                    "not a readable safetensors file (the tensors need {} bytes of data, the \
                     file has {room})",
                    m.data_len()
                )));
            }
        }
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| fmt_err(format!("not a readable safetensors file ({e})")))?;
        let header = match pre {
            Some((_, m)) => m,
            None => {
                SafeTensors::read_metadata(bytes)
                    .map_err(|e| fmt_err(format!("not a readable safetensors file ({e})")))?
                    .1
            }
        };
        let metadata: BTreeMap<String, String> = header
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let get = |key: &str| -> CoreResult<&str> {
            metadata
                .get(key)
                .map(|s| s.as_str())
                .ok_or_else(|| fmt_err(format!("missing metadata key {key:?}")))
        };
        let format = metadata.get("format").map(|s| s.as_str());
        if format != Some(FORMAT) {
            return Err(fmt_err(format!(
                "metadata format must be {FORMAT:?}, got {format:?}"
            )));
        }
        let version = get("format_version")?;
        if version.trim() != FORMAT_VERSION.to_string() {
            return Err(fmt_err(format!(
                "unknown format_version {version:?} (this nncift reads version {FORMAT_VERSION}; \
                 a newer file needs a newer nncift)"
            )));
        }
        let kind = Kind::parse(get("kind")?)?;
        let layout = Layout::parse(get("input_layout")?)?;
        let cosine_feature = match metadata.get("cosine_feature").map(|s| s.as_str()) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(fmt_err(format!(
                    "metadata cosine_feature must be 'true' or 'false', got {other:?}"
                )))
            }
        };
        let dim_s = get("embedding_dim")?;
        let embedding_dim: usize = dim_s
            .trim()
            .parse()
            .map_err(|_| fmt_err(format!("embedding_dim {dim_s:?} is not a positive integer")))?;
        let embedding_model = get("embedding_model")?.to_string();
        let parse_f = |key: &str| -> CoreResult<f64> {
            let s = get(key)?;
            s.trim()
                .parse::<f64>()
                .map_err(|_| fmt_err(format!("metadata {key}={s:?} is not a number")))
        };
        let label_scale = parse_f("label_scale")?;
        let label_offset = parse_f("label_offset")?;
        let label_name = metadata.get("label_name").cloned();

        // Collect tensors by name, refusing unknown names and anything but finite float32.
        let mut layer_tensors: BTreeMap<(usize, bool), (Vec<usize>, Vec<f32>)> = BTreeMap::new();
        let mut cosine: Option<Vec<f32>> = None;
        let mut bil_u: Option<(Vec<usize>, Vec<f32>)> = None;
        let mut bil_v: Option<(Vec<usize>, Vec<f32>)> = None;
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(fmt_err(format!(
                    "tensor {name:?} has dtype {:?}, expected F32",
                    view.dtype()
                )));
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            check_finite(&name, &data)?;
            let shape = view.shape().to_vec();
            if let Some((k, is_weight)) = parse_layer_name(&name) {
                layer_tensors.insert((k, is_weight), (shape, data));
            } else {
                match name.as_str() {
                    "output.cosine_weight" => {
                        if shape != [1] {
                            return Err(fmt_err(format!(
                                "output.cosine_weight must have shape (1,), got {shape:?}"
                            )));
                        }
                        cosine = Some(data);
                    }
                    "bilinear.u" => bil_u = Some((shape, data)),
                    "bilinear.v" => bil_v = Some((shape, data)),
                    _ => return Err(fmt_err(format!("unknown tensor {name:?}"))),
                }
            }
        }
        let n_layers = (0..)
            .take_while(|k| {
                layer_tensors.contains_key(&(*k, true)) || layer_tensors.contains_key(&(*k, false))
            })
            .count();
        if n_layers == 0 {
            return Err(fmt_err("missing tensor \"layers.0.weight\""));
        }
        if layer_tensors.len() != 2 * n_layers {
            // A gap (layers.0, layers.2) or a weight without its bias.
            for k in 0..=n_layers {
                for (is_w, what) in [(true, "weight"), (false, "bias")] {
                    if !layer_tensors.contains_key(&(k, is_w)) && k < n_layers {
                        return Err(fmt_err(format!("missing tensor \"layers.{k}.{what}\"")));
                    }
                }
            }
            let stray: Vec<String> = layer_tensors
                .keys()
                .filter(|(k, _)| *k >= n_layers)
                .map(|(k, w)| format!("layers.{k}.{}", if *w { "weight" } else { "bias" }))
                .collect();
            return Err(fmt_err(format!(
                "layer tensors must be numbered 0..L-1 without gaps; unexpected {stray:?}"
            )));
        }
        let mut layers = Vec::with_capacity(n_layers);
        for k in 0..n_layers {
            let (ws, wd) = layer_tensors.remove(&(k, true)).unwrap_or_default();
            let (bs, bd) = layer_tensors.remove(&(k, false)).unwrap_or_default();
            let w = to_2d(&format!("layers.{k}.weight"), ws, wd)?;
            if bs.len() != 1 {
                return Err(fmt_err(format!(
                    "layers.{k}.bias must be 1-D, got shape {bs:?}"
                )));
            }
            layers.push((w, Array1::from_vec(bd)));
        }
        let bilinear = match (bil_u, bil_v) {
            (None, None) => None,
            (Some((us, ud)), Some((vs, vd))) => {
                Some((to_2d("bilinear.u", us, ud)?, to_2d("bilinear.v", vs, vd)?))
            }
            _ => return Err(fmt_err("bilinear.u and bilinear.v must be given together")),
        };
        let net = NetworkWeights {
            layers,
            kind,
            layout,
            cosine_feature,
            embedding_dim,
            embedding_model,
            label_scale,
            label_offset,
            cosine_weight: cosine.map(|c| c[0]),
            bilinear,
            label_name,
            metadata,
        };
        net.validate()?;
        Ok(net)
    }

    /// The structural rules of docs/weights.md, shared by every constructor.
    fn validate(&self) -> CoreResult<()> {
        if (self.kind == Kind::Pointwise) != (self.layout == Layout::Pointwise) {
            return Err(fmt_err(format!(
                "kind {:?} does not agree with input_layout {:?}",
                self.kind.as_str(),
                self.layout.as_str()
            )));
        }
        if self.embedding_dim == 0 {
            return Err(fmt_err("embedding_dim must be a positive integer, got 0"));
        }
        // `input_dim` is up to `2 d + 2`: refuse a `d` for which that overflows (a file's
        // metadata can say 18446744073709551615) before computing it; no first layer can
        // be that wide anyway (found by tests/prop_weights.rs).
        if self.embedding_dim > (usize::MAX - 2) / 2 {
            return Err(fmt_err(format!(
                "embedding_dim {} is too large",
                self.embedding_dim
            )));
        }
        for (key, v) in [
            ("label_scale", self.label_scale),
            ("label_offset", self.label_offset),
        ] {
            if !v.is_finite() {
                return Err(fmt_err(format!("{key} must be a finite number, got {v}")));
            }
        }
        if self.label_scale == 0.0 {
            return Err(fmt_err(
                "label_scale must be non-zero (every prediction would be constant)",
            ));
        }
        if self.kind == Kind::Pointwise
            && (self.cosine_feature || self.cosine_weight.is_some() || self.bilinear.is_some())
        {
            return Err(fmt_err(
                "cosine and bilinear terms need a pairwise network, not a pointwise one",
            ));
        }
        let n = self.layers.len();
        if !(1..=MAX_LAYERS).contains(&n) {
            return Err(fmt_err(format!(
                "the network must have 1 to {MAX_LAYERS} linear layers, got {n}"
            )));
        }
        let mut expect_in = self.input_dim();
        for (k, (w, b)) in self.layers.iter().enumerate() {
            check_finite(&format!("layers.{k}.weight"), w.as_slice().unwrap_or(&[]))?;
            check_finite(&format!("layers.{k}.bias"), b.as_slice().unwrap_or(&[]))?;
            if w.ncols() != expect_in {
                let why = if k == 0 {
                    format!(
                        "input_layout {:?}, embedding_dim {}, cosine_feature {}",
                        self.layout.as_str(),
                        self.embedding_dim,
                        self.cosine_feature
                    )
                } else {
                    format!("the output size of layers.{}", k - 1)
                };
                return Err(fmt_err(format!(
                    "layers.{k}.weight has {} input columns, expected {expect_in} ({why})",
                    w.ncols()
                )));
            }
            if w.nrows() == 0 {
                return Err(fmt_err(format!("layers.{k}.weight has no output rows")));
            }
            if b.len() != w.nrows() {
                return Err(fmt_err(format!(
                    "layers.{k}.bias has {} entries, expected {}",
                    b.len(),
                    w.nrows()
                )));
            }
            expect_in = w.nrows();
        }
        if expect_in != 1 {
            return Err(fmt_err(format!(
                "the last layer must have 1 output, got {expect_in}"
            )));
        }
        if let Some(c) = self.cosine_weight {
            if !c.is_finite() {
                return Err(fmt_err("output.cosine_weight is not finite"));
            }
        }
        if let Some((u, v)) = &self.bilinear {
            let d = self.embedding_dim;
            if u.dim() != v.dim() || u.ncols() != d || u.nrows() == 0 {
                return Err(fmt_err(format!(
                    "bilinear.u and bilinear.v must both have shape (r, {d}) with r >= 1, got \
                     {:?} and {:?}",
                    u.dim(),
                    v.dim()
                )));
            }
            check_finite("bilinear.u", u.as_slice().unwrap_or(&[]))?;
            check_finite("bilinear.v", v.as_slice().unwrap_or(&[]))?;
        }
        Ok(())
    }

    /// `in_0`: the width of the first layer's input.
    pub fn input_dim(&self) -> usize {
        self.layout.input_dim(self.embedding_dim) + usize::from(self.cosine_feature)
    }
    pub fn kind(&self) -> Kind {
        self.kind
    }
    pub fn layout(&self) -> Layout {
        self.layout
    }
    pub fn cosine_feature(&self) -> bool {
        self.cosine_feature
    }
    pub fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }
    pub fn embedding_model(&self) -> &str {
        &self.embedding_model
    }
    pub fn label_scale(&self) -> f64 {
        self.label_scale
    }
    pub fn label_offset(&self) -> f64 {
        self.label_offset
    }
    pub fn label_name(&self) -> Option<&str> {
        self.label_name.as_deref()
    }
    pub fn cosine_weight(&self) -> Option<f32> {
        self.cosine_weight
    }
    /// Rank `r` of the bilinear term, if any.
    pub fn bilinear_rank(&self) -> Option<usize> {
        self.bilinear.as_ref().map(|(u, _)| u.nrows())
    }
    /// `(U (r, d), V (r, d))` of the bilinear term, if any.
    pub fn bilinear_ref(&self) -> Option<(&Array2<f32>, &Array2<f32>)> {
        self.bilinear.as_ref().map(|(u, v)| (u, v))
    }
    /// Output sizes of every layer but the last.
    pub fn hidden_sizes(&self) -> Vec<usize> {
        self.layers[..self.layers.len() - 1]
            .iter()
            .map(|(w, _)| w.nrows())
            .collect()
    }
    /// Number of linear layers.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }
    /// All metadata strings (file metadata, or the canonical keys for in-memory weights).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
    /// `(W_k, b_k)` of layer `k`.
    pub fn layer(&self, k: usize) -> Option<(&Array2<f32>, &Array1<f32>)> {
        self.layers.get(k).map(|(w, b)| (w, b))
    }
}

/// The header of a safetensors file (its length `n` and the parsed, offset-checked
/// metadata), or `None` where safetensors' own reader is left to name the problem (too
/// short, a length past the end, not JSON, ...).
fn parse_header(bytes: &[u8]) -> Option<(usize, Metadata)> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..n.checked_add(8)?)?;
    Some((n, serde_json::from_slice(header).ok()?))
}

/// `layers.{k}.weight` -> `(k, true)`, `layers.{k}.bias` -> `(k, false)`; canonical decimal
/// only (no leading zeros), so that two names cannot denote one layer.
fn parse_layer_name(name: &str) -> Option<(usize, bool)> {
    let rest = name.strip_prefix("layers.")?;
    let (num, what) = rest.split_once('.')?;
    if num.is_empty() || (num.len() > 1 && num.starts_with('0')) {
        return None;
    }
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let k: usize = num.parse().ok()?;
    match what {
        "weight" => Some((k, true)),
        "bias" => Some((k, false)),
        _ => None,
    }
}

fn to_2d(name: &str, shape: Vec<usize>, data: Vec<f32>) -> CoreResult<Array2<f32>> {
    if shape.len() != 2 {
        return Err(fmt_err(format!("{name} must be 2-D, got shape {shape:?}")));
    }
    Array2::from_shape_vec((shape[0], shape[1]), data).map_err(|e| fmt_err(format!("{name}: {e}")))
}

/// The message of a CoreError without its "invalid format: " prefix (to re-wrap it).
fn strip_kind(e: &CoreError) -> String {
    match e {
        CoreError::Format(m) | CoreError::Runtime(m) => m.clone(),
        other => other.to_string(),
    }
}
