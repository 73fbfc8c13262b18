//! Flash inference example: a small classifier whose inference runs in the host.
//!
//! The component never links an ML runtime: it calls `wasi:nn` through
//! [`flash_sdk::nn`], and `flash-host` runs the model with ONNX Runtime — on the GPU
//! (CUDA) when the resource config is a GPU config and the host has one, else on the CPU.
//!
//! * `classify` uses the model the host preloaded from the artifact (`flash.toml`
//!   declares `classifier`, built from `model/classifier.onnx`).
//! * `classify_with` names the model, or loads the copy compiled into this component
//!   (`model = "embedded"`) for an explicit execution target — the slow path (the model is
//!   parsed per call), useful to compare targets.
//!
//! `rows` is a [`Matrix`]: JSON rows (`[[0.5, -1, 2, 0.25]]`) or, for large batches, the
//! binary form `{"shape": [n, 4], "f32_le_base64": "..."}`, which skips parsing numbers.

use flash_sdk::nn::{Model, Target};
use flash_sdk::{Error, Matrix, ResourceConfig, Result, remote};
use serde::{Deserialize, Serialize};

/// A GPU queue endpoint: the host asks ONNX Runtime for CUDA and falls back to the CPU.
const CLASSIFIER: ResourceConfig = ResourceConfig::queue("classifier")
    .gpu(&["AMPERE_16", "ADA_24"])
    .workers(0, 2);

/// The model compiled in, for `classify_with(model = "embedded")`.
const EMBEDDED: &[u8] = include_bytes!("../model/classifier.onnx");

/// Rows per call.
const MAX_ROWS: usize = 4096;

/// One row's result.
#[derive(Debug, Serialize, Deserialize)]
pub struct Prediction {
    /// Index of the most likely class.
    pub class: u32,
    /// Softmax over the three classes.
    pub probabilities: Vec<f32>,
}

/// Classifies each row of four features with the host's preloaded `classifier`.
/// (Any model with a `features` input and a `probabilities` output works the same way.)
#[remote(CLASSIFIER)]
fn classify(rows: Matrix) -> Result<Vec<Prediction>> {
    run(&Model::by_name("classifier")?, &rows)
}

/// Like `classify`, with the model named: a preloaded model's name, or `embedded` to
/// load this component's own copy on `target` (`cpu`, `gpu` or `tpu`).
#[remote(CLASSIFIER)]
fn classify_with(model: String, target: String, rows: Matrix) -> Result<Vec<Prediction>> {
    let model = if model == "embedded" {
        Model::load(EMBEDDED, target.parse::<Target>()?)?
    } else {
        Model::by_name(&model)?
    };
    run(&model, &rows)
}

fn run(model: &Model, rows: &Matrix) -> Result<Vec<Prediction>> {
    if rows.rows() == 0 || rows.rows() > MAX_ROWS {
        return Err(Error::invalid_input(format!(
            "rows must hold 1..={MAX_ROWS} rows, got {}",
            rows.rows()
        )));
    }
    // The model checks the width (the classifier takes 4 features).
    let dims = [rows.rows() as u32, rows.cols() as u32];
    let data = rows.data();
    let outputs = model.run_f32(&[("features", &dims, data)])?;
    let output = outputs
        .into_iter()
        .find(|o| o.name == "probabilities")
        .ok_or_else(|| Error::internal("the model has no `probabilities` output"))?;
    let classes = output.dimensions.last().copied().unwrap_or(0) as usize;
    if classes == 0 || output.data.len() != rows.rows() * classes {
        return Err(Error::internal(format!(
            "unexpected output shape {:?} for {} rows",
            output.dimensions,
            rows.rows()
        )));
    }
    Ok(output
        .data
        .chunks_exact(classes)
        .map(|p| Prediction {
            class: p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i as u32),
            probabilities: p.to_vec(),
        })
        .collect())
}

flash_sdk::export_app!();
