//! Weight-file validation: every broken file is a `CoreError::Format` naming the problem.

use std::collections::HashMap;

use nncift_core::scorer::{Kind, Layout, NetworkWeights};
use nncift_core::CoreError;
use safetensors::tensor::{Dtype, TensorView};

/// Tensors as (name, shape, f32 data) plus metadata -> safetensors bytes.
fn file(tensors: &[(&str, Vec<usize>, Vec<f32>)], meta: &[(&str, &str)]) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.to_string(),
                s.clone(),
                d.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("view"),
            )
        })
        .collect();
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::tensor::serialize(views, Some(meta)).expect("serialize")
}

const D: usize = 3;

fn good_meta() -> Vec<(&'static str, &'static str)> {
    vec![
        ("format", "nncift-influence-network"),
        ("format_version", "1"),
        ("kind", "pairwise"),
        ("input_layout", "paper"),
        ("embedding_dim", "3"),
        ("embedding_model", "sentence-transformers/all-MiniLM-L6-v2"),
        ("label_scale", "2.0"),
        ("label_offset", "-1.5"),
        ("label_name", "delift-se"),
    ]
}

fn good_tensors() -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
    let in0 = 2 * D + 1;
    vec![
        (
            "layers.0.weight",
            vec![4, in0],
            (0..4 * in0).map(|i| i as f32 * 0.01).collect(),
        ),
        ("layers.0.bias", vec![4], vec![0.1, -0.1, 0.2, 0.0]),
        ("layers.1.weight", vec![1, 4], vec![1.0, -1.0, 0.5, 0.25]),
        ("layers.1.bias", vec![1], vec![0.3]),
    ]
}

fn load(
    t: &[(&str, Vec<usize>, Vec<f32>)],
    m: &[(&str, &str)],
) -> Result<NetworkWeights, CoreError> {
    NetworkWeights::from_bytes(&file(t, m))
}

fn expect_format_err(t: &[(&str, Vec<usize>, Vec<f32>)], m: &[(&str, &str)], needle: &str) {
    match load(t, m) {
        Err(CoreError::Format(msg)) => assert!(msg.contains(needle), "{msg:?} lacks {needle:?}"),
        other => panic!("expected a format error containing {needle:?}, got {other:?}"),
    }
}

#[test]
fn good_file_round_trips_metadata() {
    let net = load(&good_tensors(), &good_meta()).expect("valid");
    assert_eq!(net.kind(), Kind::Pairwise);
    assert_eq!(net.layout(), Layout::Paper);
    assert_eq!(net.embedding_dim(), 3);
    assert_eq!(net.hidden_sizes(), vec![4]);
    assert_eq!(net.label_scale(), 2.0);
    assert_eq!(net.label_offset(), -1.5);
    assert_eq!(net.label_name(), Some("delift-se"));
    assert_eq!(
        net.metadata().get("embedding_model").map(String::as_str),
        Some("sentence-transformers/all-MiniLM-L6-v2")
    );
}

#[test]
fn corrupt_and_truncated_files_are_refused() {
    let bytes = file(&good_tensors(), &good_meta());
    for cut in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        let err = NetworkWeights::from_bytes(&bytes[..cut]).expect_err("truncated");
        assert!(matches!(err, CoreError::Format(_)), "{err:?}");
    }
    let mut garbage = bytes.clone();
    garbage[9..40].fill(b'{');
    assert!(matches!(
        NetworkWeights::from_bytes(&garbage),
        Err(CoreError::Format(_))
    ));
    assert!(matches!(
        NetworkWeights::from_bytes(b"not a file at all"),
        Err(CoreError::Format(_))
    ));
    let err = NetworkWeights::from_file("/nonexistent/net.safetensors").expect_err("missing");
    assert!(err.to_string().contains("cannot read"), "{err}");
}

#[test]
fn metadata_problems_are_named() {
    let t = good_tensors();
    let with = |k: &'static str, v: &'static str| {
        let mut m: Vec<_> = good_meta().into_iter().filter(|(kk, _)| *kk != k).collect();
        m.push((k, v));
        m
    };
    let without = |k: &str| {
        good_meta()
            .into_iter()
            .filter(|(kk, _)| *kk != k)
            .collect::<Vec<_>>()
    };
    expect_format_err(
        &t,
        &with("format_version", "2"),
        "unknown format_version \"2\"",
    );
    expect_format_err(&t, &with("format", "something-else"), "metadata format");
    expect_format_err(&t, &without("format_version"), "format_version");
    expect_format_err(&t, &without("embedding_model"), "embedding_model");
    expect_format_err(&t, &without("label_scale"), "label_scale");
    expect_format_err(&t, &with("kind", "pointwise"), "does not agree");
    expect_format_err(&t, &with("input_layout", "sideways"), "input_layout");
    expect_format_err(&t, &with("embedding_dim", "three"), "embedding_dim");
    expect_format_err(&t, &with("embedding_dim", "4"), "input columns");
    expect_format_err(&t, &with("label_scale", "nan"), "label_scale");
    expect_format_err(&t, &with("label_scale", "0"), "non-zero");
    expect_format_err(&t, &with("cosine_feature", "yes"), "cosine_feature");
    expect_format_err(&t, &with("cosine_feature", "true"), "input columns");
}

#[test]
fn tensor_problems_are_named() {
    let m = good_meta();
    let mut t = good_tensors();
    t[2].2[1] = f32::NAN;
    expect_format_err(&t, &m, "non-finite");
    let mut t = good_tensors();
    t[0].2[0] = f32::INFINITY;
    expect_format_err(&t, &m, "non-finite");
    let mut t = good_tensors();
    t.push(("layers.1.extra", vec![1], vec![0.0]));
    expect_format_err(&t, &m, "unknown tensor");
    let mut t = good_tensors();
    t.push(("pickle", vec![1], vec![0.0]));
    expect_format_err(&t, &m, "unknown tensor");
    let t: Vec<_> = good_tensors()
        .into_iter()
        .filter(|x| x.0 != "layers.1.bias")
        .collect();
    expect_format_err(&t, &m, "layers.1.bias");
    let t: Vec<_> = good_tensors()
        .into_iter()
        .filter(|x| !x.0.starts_with("layers.0"))
        .collect();
    expect_format_err(&t, &m, "layers.0");
    let mut t = good_tensors();
    t[2] = ("layers.1.weight", vec![2, 4], vec![0.1; 8]);
    expect_format_err(&t, &m, "bias has 1 entries");
    let mut t = good_tensors();
    t[2] = ("layers.1.weight", vec![1, 3], vec![0.1; 3]);
    expect_format_err(&t, &m, "layers.1.weight has 3 input columns");
    let mut t = good_tensors();
    t.push(("bilinear.u", vec![2, D], vec![0.1; 2 * D]));
    expect_format_err(&t, &m, "together");
    t.push(("bilinear.v", vec![2, D + 1], vec![0.1; 2 * (D + 1)]));
    expect_format_err(&t, &m, "bilinear.u and bilinear.v must both have shape");
    let mut t = good_tensors();
    t.push(("output.cosine_weight", vec![2], vec![0.1, 0.2]));
    expect_format_err(&t, &m, "output.cosine_weight must have shape (1,)");
    // Six layers is beyond the format's 1..=5.
    let mut t = Vec::new();
    let names: Vec<(String, String)> = (0..6)
        .map(|k| (format!("layers.{k}.weight"), format!("layers.{k}.bias")))
        .collect();
    for (k, (wn, bn)) in names.iter().enumerate() {
        let inn = if k == 0 { 2 * D + 1 } else { 2 };
        let out = if k == 5 { 1 } else { 2 };
        t.push((wn.as_str(), vec![out, inn], vec![0.1; out * inn]));
        t.push((bn.as_str(), vec![out], vec![0.0; out]));
    }
    expect_format_err(&t, &m, "1 to 5 linear layers");
}

#[test]
fn non_f32_tensors_are_refused() {
    let t = good_tensors();
    let mut bytes_owned: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = t
        .iter()
        .map(|(n, s, d)| {
            (
                n.to_string(),
                s.clone(),
                d.iter().flat_map(|v| v.to_le_bytes()).collect(),
                Dtype::F32,
            )
        })
        .collect();
    // layers.1.bias as f64
    bytes_owned[3] = (
        "layers.1.bias".into(),
        vec![1],
        0.3f64.to_le_bytes().to_vec(),
        Dtype::F64,
    );
    let views: Vec<(String, TensorView<'_>)> = bytes_owned
        .iter()
        .map(|(n, s, b, dt)| (n.clone(), TensorView::new(*dt, s.clone(), b).expect("view")))
        .collect();
    let meta: HashMap<String, String> = good_meta()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let bytes = safetensors::tensor::serialize(views, Some(meta)).expect("serialize");
    match NetworkWeights::from_bytes(&bytes) {
        Err(CoreError::Format(msg)) => assert!(msg.contains("dtype"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn extra_metadata_is_kept_apart_from_the_format_keys() {
    let mut meta = good_meta();
    meta.push(("hidden_sizes", "[4]"));
    meta.push(("trained_on", "x"));
    let net = load(&good_tensors(), &meta).expect("valid file");
    let extra = net.extra_metadata();
    assert_eq!(extra.len(), 1);
    assert_eq!(extra.get("trained_on").map(String::as_str), Some("x"));

    let more = [("variant".to_string(), "paper".to_string())].into();
    let net = net.with_extra_metadata(more).expect("free-form key");
    assert_eq!(
        net.metadata().get("variant").map(String::as_str),
        Some("paper")
    );
    let clash = [("kind".to_string(), "pointwise".to_string())].into();
    match net.with_extra_metadata(clash) {
        Err(CoreError::Format(msg)) => assert!(msg.contains("format keys"), "{msg}"),
        other => panic!("a format key as extra metadata was accepted: {other:?}"),
    }
}
