//! Property tests of the weight-file reader (`NetworkWeights::from_bytes`) on adversarial
//! input: random bytes, random-but-plausible safetensors headers (random dtypes, shapes up
//! to 10^16 and 2^64 - 1 elements, overlapping and out-of-range data offsets, random
//! metadata, wrong header lengths, truncation) and mutated valid networks. Every input is
//! an `Ok` network that satisfies the format or a `CoreError::Format`; never a panic, and
//! never an allocation beyond a small multiple of the file's size: a counting global
//! allocator (per thread, so parallel tests do not disturb it) measures the peak bytes
//! outstanding and the largest single request during each call.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;
use std::collections::HashMap;

use nncift_core::scorer::{Kind, Layout, NetworkWeights};
use nncift_core::CoreError;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use safetensors::tensor::{Dtype, TensorView};

// ---------------------------------------------------------------- counting allocator

struct Counting;

thread_local! {
    // Const-initialised `Cell`s have no destructor and never allocate, so the allocator
    // can touch them at any time (`try_with` covers thread teardown).
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static OUTSTANDING: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let now = OUTSTANDING.with(|o| {
                let v = o.get() + size as i64;
                o.set(v);
                v
            });
            PEAK.with(|p| p.set(p.get().max(now)));
            LARGEST.with(|l| l.set(l.get().max(size)));
        }
    });
}

fn note_free(size: usize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            OUTSTANDING.with(|o| o.set(o.get() - size as i64));
        }
    });
}

// SAFETY: every call forwards to `System` with the caller's arguments unchanged; the
// bookkeeping only touches const-initialised thread-locals.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        note_free(layout.size());
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        // A moving realloc holds both blocks for a moment: count the new one first.
        note_alloc(new_size);
        note_free(layout.size());
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes a call may hold at once, beyond the input itself: `PEAK_FACTOR` x the file
/// (tensor data copied once into float32 vectors, the header parsed into maps) plus a
/// fixed slack for error messages and small tables.
const PEAK_FACTOR: i64 = 16;
const LARGEST_FACTOR: usize = 4;
const SLACK: usize = 64 * 1024;

/// `from_bytes(bytes)` with the allocations it makes measured: (result, peak outstanding
/// bytes, largest single request).
fn measured(bytes: &[u8]) -> (Result<NetworkWeights, CoreError>, i64, usize) {
    OUTSTANDING.with(|o| o.set(0));
    PEAK.with(|p| p.set(0));
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let r = NetworkWeights::from_bytes(bytes);
    TRACKING.with(|t| t.set(false));
    (r, PEAK.with(Cell::get), LARGEST.with(Cell::get))
}

/// The properties every input must satisfy.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (r, peak, largest) = measured(bytes);
    let len = bytes.len();
    prop_assert!(
        peak <= PEAK_FACTOR * len as i64 + SLACK as i64,
        "peak {peak} B outstanding for a {len} B file"
    );
    prop_assert!(
        largest <= LARGEST_FACTOR * len + SLACK,
        "one allocation of {largest} B for a {len} B file"
    );
    match r {
        Err(CoreError::Format(msg)) => {
            prop_assert!(msg.starts_with("InfluenceNetwork weights: "), "{msg}");
        }
        Err(other) => prop_assert!(false, "not a format error: {other:?}"),
        Ok(net) => {
            // A network that loads satisfies the structural rules of docs/weights.md.
            prop_assert!((1..=5).contains(&net.depth()));
            prop_assert!(net.embedding_dim() > 0);
            prop_assert_eq!(
                net.kind() == Kind::Pointwise,
                net.layout() == Layout::Pointwise
            );
            let mut expect_in = net.input_dim();
            for k in 0..net.depth() {
                let (w, b) = net.layer(k).expect("layer");
                prop_assert_eq!(w.ncols(), expect_in);
                prop_assert_eq!(b.len(), w.nrows());
                prop_assert!(w.iter().chain(b.iter()).all(|v| v.is_finite()));
                expect_in = w.nrows();
            }
            prop_assert_eq!(expect_in, 1);
        }
    }
    Ok(())
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x6e6e_6369_6674),
        ..Config::default()
    }
}

// ---------------------------------------------------------------- plausible headers

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const NAMES: [&str; 10] = [
    "layers.0.weight",
    "layers.0.bias",
    "layers.1.weight",
    "layers.1.bias",
    "layers.01.weight",
    "layers.5.bias",
    "output.cosine_weight",
    "bilinear.u",
    "bilinear.v",
    "__metadata__",
];

const DTYPES: [&str; 14] = [
    "F32", "F32", "F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F4", "F6_E2M3", "F8_E4M3",
    "C64", "X",
];

fn dim() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0u64..8,
        1 => Just(10_000_000_000_000_000u64),
        1 => Just(u64::MAX),
        1 => Just(1u64 << 32),
        1 => Just((1u64 << 61) - 1),
        1 => any::<u64>(),
    ]
}

fn bits(dtype: &str) -> u64 {
    match dtype {
        "F4" => 4,
        "F6_E2M3" => 6,
        "U8" | "BOOL" | "F8_E4M3" => 8,
        "F16" | "BF16" => 16,
        "F32" => 32,
        _ => 64,
    }
}

#[derive(Debug, Clone)]
struct TensorSpec {
    name: String,
    dtype: &'static str,
    shape: Vec<u64>,
    /// `None`: the next slice of a contiguous chain sized from shape and dtype.
    offsets: Option<(u64, u64)>,
}

fn tensor_spec() -> impl Strategy<Value = TensorSpec> {
    let name = prop_oneof![
        4 => proptest::sample::select(NAMES.to_vec()).prop_map(String::from),
        1 => "[a-z._0-9]{0,12}",
    ];
    let offsets = prop_oneof![
        3 => Just(None),
        1 => (0u64..64, 0u64..64).prop_map(Some),
        1 => (any::<u64>(), any::<u64>()).prop_map(Some),
    ];
    (
        name,
        proptest::sample::select(DTYPES.to_vec()),
        proptest::collection::vec(dim(), 0..4),
        offsets,
    )
        .prop_map(|(name, dtype, shape, offsets)| TensorSpec {
            name,
            dtype,
            shape,
            offsets,
        })
}

const META_VALUES: [&str; 14] = [
    "3",
    "0",
    "-1",
    "18446744073709551615",
    "9223372036854775807",
    " 3 ",
    "1e3",
    "nan",
    "inf",
    "1e308",
    "",
    "true",
    "pairwise",
    "paper",
];

fn good_meta(d: usize) -> Vec<(String, String)> {
    [
        ("format", "nncift-influence-network".to_string()),
        ("format_version", "1".to_string()),
        ("kind", "pairwise".to_string()),
        ("input_layout", "paper".to_string()),
        ("embedding_dim", d.to_string()),
        ("embedding_model", "m".to_string()),
        ("label_scale", "2.0".to_string()),
        ("label_offset", "-1.5".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Metadata edits: (key index into the canonical keys, or a new key; new value or drop).
fn meta_edits() -> impl Strategy<Value = Vec<(usize, Option<String>)>> {
    let value = prop_oneof![
        3 => proptest::sample::select(META_VALUES.to_vec()).prop_map(String::from),
        1 => ".{0,8}",
    ];
    proptest::collection::vec((0usize..10, proptest::option::of(value)), 0..4)
}

fn apply_edits(meta: &mut Vec<(String, String)>, edits: &[(usize, Option<String>)]) {
    for (i, v) in edits {
        match (meta.get(*i).is_some(), v) {
            (true, Some(v)) => meta[*i].1 = v.clone(),
            (true, None) => {
                meta.remove(*i);
            }
            (false, Some(v)) => meta.push((format!("extra{i}"), v.clone())),
            (false, None) => {}
        }
    }
}

/// How the 8-byte header length is written.
#[derive(Debug, Clone)]
enum HeaderLen {
    Exact,
    Off(i64),
    Any(u64),
}

#[derive(Debug, Clone)]
struct Plausible {
    tensors: Vec<TensorSpec>,
    meta_edits: Vec<(usize, Option<String>)>,
    /// Replace the metadata object by this raw JSON (non-string values and the like).
    raw_meta: Option<&'static str>,
    data: Vec<u8>,
    header_len: HeaderLen,
    truncate: Option<usize>,
}

fn plausible() -> impl Strategy<Value = Plausible> {
    let raw = proptest::option::weighted(
        0.15,
        proptest::sample::select(vec![
            "{\"format\": 1}",
            "[]",
            "null",
            "{\"format\": \"nncift-influence-network\", \"format\": \"x\"}",
            "{\"a\": {\"b\": []}}",
            "\"x\"",
        ]),
    );
    let header_len = prop_oneof![
        6 => Just(HeaderLen::Exact),
        1 => (-9i64..9).prop_map(HeaderLen::Off),
        1 => any::<u64>().prop_map(HeaderLen::Any),
    ];
    (
        proptest::collection::vec(tensor_spec(), 0..5),
        meta_edits(),
        raw,
        proptest::collection::vec(any::<u8>(), 0..256),
        header_len,
        proptest::option::weighted(0.15, any::<usize>()),
    )
        .prop_map(
            |(tensors, meta_edits, raw_meta, data, header_len, truncate)| Plausible {
                tensors,
                meta_edits,
                raw_meta,
                data,
                header_len,
                truncate,
            },
        )
}

fn plausible_bytes(p: &Plausible) -> Vec<u8> {
    let mut entries = Vec::new();
    match p.raw_meta {
        Some(raw) => entries.push(format!("\"__metadata__\":{raw}")),
        None => {
            let mut meta = good_meta(3);
            apply_edits(&mut meta, &p.meta_edits);
            let body: Vec<String> = meta
                .iter()
                .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
                .collect();
            entries.push(format!("\"__metadata__\":{{{}}}", body.join(",")));
        }
    }
    let mut start = 0u64;
    for t in &p.tensors {
        let (s, e) = t.offsets.unwrap_or_else(|| {
            let n = t.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d));
            let size = n.saturating_mul(bits(t.dtype)) / 8;
            (start, start.saturating_add(size))
        });
        start = e;
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        entries.push(format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{s},{e}]}}",
            json_str(&t.name),
            t.dtype,
            shape.join(",")
        ));
    }
    let header = format!("{{{}}}", entries.join(","));
    let n = header.len() as u64;
    let n = match p.header_len {
        HeaderLen::Exact => n,
        HeaderLen::Off(d) => n.wrapping_add_signed(d),
        HeaderLen::Any(v) => v,
    };
    let mut out = n.to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    // Data sized to the claimed chain when that is small, else the random bytes.
    if start <= 4096 && p.tensors.iter().all(|t| t.offsets.is_none()) {
        out.extend((0..start).map(|i| p.data.get(i as usize).copied().unwrap_or(0x3f)));
    } else {
        out.extend_from_slice(&p.data);
    }
    if let Some(cut) = p.truncate {
        out.truncate(cut % (out.len() + 1));
    }
    out
}

// ---------------------------------------------------------------- mutated valid networks

#[derive(Debug, Clone)]
struct NetSpec {
    layout: Layout,
    d: usize,
    hidden: Vec<usize>,
    cos_feature: bool,
    cos_weight: bool,
    rank: Option<usize>,
    values: Vec<f32>,
}

#[derive(Debug, Clone)]
enum Mutation {
    Meta(usize, Option<String>),
    DropTensor(usize),
    Reshape(usize, Vec<usize>),
    FlipByte(usize, u8),
    Truncate(usize),
}

fn net_spec() -> impl Strategy<Value = NetSpec> {
    let value = prop_oneof![
        8 => -2.0f32..2.0,
        1 => Just(0.0f32),
        1 => proptest::sample::select(vec![f32::NAN, f32::INFINITY, f32::MAX, -0.0]),
    ];
    (
        proptest::sample::select(vec![Layout::Paper, Layout::Concat, Layout::Pointwise]),
        0usize..5,
        proptest::collection::vec(0usize..5, 0..6),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(0usize..3),
        proptest::collection::vec(value, 1..64),
    )
        .prop_map(
            |(layout, d, hidden, cos_feature, cos_weight, rank, values)| NetSpec {
                layout,
                d,
                hidden,
                cos_feature,
                cos_weight,
                rank,
                values,
            },
        )
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let value = prop_oneof![
        3 => proptest::sample::select(META_VALUES.to_vec()).prop_map(String::from),
        1 => ".{0,8}",
    ];
    prop_oneof![
        4 => (0usize..10, proptest::option::of(value)).prop_map(|(i, v)| Mutation::Meta(i, v)),
        1 => any::<usize>().prop_map(Mutation::DropTensor),
        2 => (any::<usize>(), proptest::collection::vec(0usize..6, 0..4))
            .prop_map(|(i, s)| Mutation::Reshape(i, s)),
        2 => (any::<usize>(), 1u8..=255).prop_map(|(p, x)| Mutation::FlipByte(p, x)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn net_bytes(spec: &NetSpec, mutations: &[Mutation]) -> Vec<u8> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                at += 1;
                spec.values[at % spec.values.len()]
            })
            .collect()
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut in_dim = spec.layout.input_dim(spec.d) + usize::from(spec.cos_feature);
    for (k, &h) in spec.hidden.iter().chain(std::iter::once(&1)).enumerate() {
        tensors.push((
            format!("layers.{k}.weight"),
            vec![h, in_dim],
            take(h * in_dim),
        ));
        tensors.push((format!("layers.{k}.bias"), vec![h], take(h)));
        in_dim = h;
    }
    if spec.cos_weight {
        tensors.push(("output.cosine_weight".into(), vec![1], take(1)));
    }
    if let Some(r) = spec.rank {
        tensors.push(("bilinear.u".into(), vec![r, spec.d], take(r * spec.d)));
        tensors.push(("bilinear.v".into(), vec![r, spec.d], take(r * spec.d)));
    }
    let mut meta = good_meta(spec.d);
    let (kind, layout) = match spec.layout {
        Layout::Paper => ("pairwise", "paper"),
        Layout::Concat => ("pairwise", "concat"),
        Layout::Pointwise => ("pointwise", "pointwise"),
    };
    meta[2].1 = kind.into();
    meta[3].1 = layout.into();
    if spec.cos_feature {
        meta.push(("cosine_feature".into(), "true".into()));
    }
    let mut byte_edits = Vec::new();
    for m in mutations {
        match m {
            Mutation::Meta(i, v) => apply_edits(&mut meta, &[(*i, v.clone())]),
            Mutation::DropTensor(i) if !tensors.is_empty() => {
                let i = i % tensors.len();
                tensors.remove(i);
            }
            Mutation::Reshape(i, shape) if !tensors.is_empty() => {
                let i = i % tensors.len();
                let n: usize = shape.iter().product();
                tensors[i] = (tensors[i].0.clone(), shape.clone(), take(n));
            }
            other => byte_edits.push(other.clone()),
        }
    }
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, d)| (n, s, d.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = raw
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("consistent view"),
            )
        })
        .collect();
    let meta: HashMap<String, String> = meta.into_iter().collect();
    let mut out = safetensors::tensor::serialize(views, Some(meta)).expect("serialize");
    for m in byte_edits {
        match m {
            Mutation::FlipByte(p, x) if !out.is_empty() => {
                let p = p % out.len();
                out[p] ^= x;
            }
            Mutation::Truncate(p) => out.truncate(p % (out.len() + 1)),
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------- the properties

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn random_bytes_are_refused_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes)?;
    }

    #[test]
    fn random_bytes_behind_a_plausible_length_are_refused_cleanly(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        off in 0usize..16,
    ) {
        let n = body.len().saturating_sub(off) as u64;
        let mut bytes = n.to_le_bytes().to_vec();
        bytes.extend_from_slice(&body);
        check(&bytes)?;
    }

    #[test]
    fn plausible_headers_give_a_network_or_a_format_error(p in plausible()) {
        check(&plausible_bytes(&p))?;
    }

    #[test]
    fn mutated_networks_give_a_network_or_a_format_error(
        spec in net_spec(),
        mutations in proptest::collection::vec(mutation(), 0..3),
    ) {
        check(&net_bytes(&spec, &mutations))?;
    }
}

#[test]
fn unmutated_networks_load() {
    // The generator of the property above makes valid files when nothing is mutated and
    // the sizes are sane: guards against a generator that only ever makes garbage.
    let spec = NetSpec {
        layout: Layout::Paper,
        d: 3,
        hidden: vec![4, 2],
        cos_feature: true,
        cos_weight: true,
        rank: Some(2),
        values: vec![0.5, -0.25, 1.0],
    };
    let net = NetworkWeights::from_bytes(&net_bytes(&spec, &[])).expect("valid file");
    assert_eq!(net.depth(), 3);
    assert_eq!(net.bilinear_rank(), Some(2));
}

/// Eight tensors of 2^61 - 1 bytes each claim a data section of 2^64 - 8 bytes: safetensors
/// 0.8's `buffer_end + N_LEN + n` overflows (a panic where overflow checks are on).
#[test]
fn data_offsets_summing_past_usize_max_are_a_format_error() {
    let s = (1u64 << 61) - 1;
    let p = Plausible {
        tensors: (0..8)
            .map(|i| TensorSpec {
                name: format!("t{i}"),
                dtype: "U8",
                shape: vec![s],
                offsets: Some((i * s, (i + 1) * s)),
            })
            .collect(),
        meta_edits: Vec::new(),
        raw_meta: None,
        data: Vec::new(),
        header_len: HeaderLen::Exact,
        truncate: None,
    };
    check(&plausible_bytes(&p)).expect("clean refusal");
}

/// `embedding_dim` = usize::MAX: the expected first-layer width `2 d + 1` overflows.
#[test]
fn an_embedding_dim_near_usize_max_is_a_format_error() {
    let spec = NetSpec {
        layout: Layout::Paper,
        d: 2,
        hidden: vec![2],
        cos_feature: false,
        cos_weight: false,
        rank: None,
        values: vec![0.5],
    };
    for d in ["18446744073709551615", "9223372036854775807"] {
        let bytes = net_bytes(&spec, &[Mutation::Meta(4, Some(d.into()))]);
        check(&bytes).expect("clean refusal");
        assert!(NetworkWeights::from_bytes(&bytes).is_err());
    }
}
