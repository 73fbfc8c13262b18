//! Flash quickstart: two endpoints from one component.
//!
//! * `gpu_config`, a queue endpoint on GPU workers: `embed` turns text into a vector
//!   and `similarity` compares two texts. (The "model" is a deterministic feature hash,
//!   so the example runs anywhere; swap in real inference without changing anything
//!   else.)
//! * `api`, a load-balanced HTTP endpoint on CPU workers: `POST /predict` and
//!   `GET /stats`. `predict` calls `embed` like any Rust function; because `embed` lives
//!   on `gpu_config`, that call goes to the GPU endpoint when deployed, and runs in place
//!   in a local one-shot run.

use flash_sdk::{Error, ResourceConfig, Result, remote};
use serde::{Deserialize, Serialize};

/// GPU queue endpoint: scale to zero, up to three workers.
const GPU: ResourceConfig = ResourceConfig::queue("gpu_config")
    .gpu(&["AMPERE_48", "ADA_24"])
    .workers(0, 3);

/// CPU HTTP endpoint: one warm worker.
const API: ResourceConfig = ResourceConfig::load_balanced("api")
    .cpu(&["cpu3c-1-2"])
    .workers(1, 3);

/// The longest input `embed` accepts, in bytes.
const MAX_TEXT: usize = 64 * 1024;

/// Embeds `text` into a unit vector of `dims` dimensions (a hashed bag of words).
#[remote(GPU)]
fn embed(text: String, dims: u32) -> Result<Vec<f32>> {
    if dims == 0 || dims > 4096 {
        return Err(Error::invalid_input(format!(
            "dims must be in 1..=4096, got {dims}"
        )));
    }
    if text.len() > MAX_TEXT {
        return Err(Error::invalid_input(format!(
            "text is longer than {MAX_TEXT} bytes"
        )));
    }
    // What a function prints goes to its worker's log, tagged with the job: `flash logs`.
    println!(
        "embedding {} words into {dims} dimensions",
        text.split_whitespace().count()
    );
    let mut v = vec![0f32; dims as usize];
    for word in text.split_whitespace() {
        let h = fnv1a(word.to_lowercase().as_bytes());
        let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
        v[((h >> 1) % u64::from(dims)) as usize] += sign;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    Ok(v)
}

/// Cosine similarity of two texts, in `[-1, 1]`.
#[remote(GPU)]
async fn similarity(a: String, b: String) -> Result<f32> {
    let (va, vb) = (embed(a, 64)?, embed(b, 64)?);
    Ok(va.iter().zip(&vb).map(|(x, y)| x * y).sum())
}

/// The answer of `POST /predict`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Prediction {
    pub label: String,
    pub score: f32,
    pub dims: usize,
}

/// Classifies `text` as `positive` or `negative` by its similarity to two prototypes.
#[remote(API, method = "POST", path = "/predict")]
async fn predict(text: String) -> Result<Prediction> {
    let v = embed(text, 64)?; // a peer call to the GPU endpoint when deployed
    let pos = embed("good great excellent love happy".into(), 64)?;
    let neg = embed("bad awful terrible hate sad".into(), 64)?;
    let dot = |p: &[f32]| v.iter().zip(p).map(|(x, y)| x * y).sum::<f32>();
    let (p, n) = (dot(&pos), dot(&neg));
    Ok(Prediction {
        label: if p >= n { "positive" } else { "negative" }.into(),
        score: p - n,
        dims: v.len(),
    })
}

/// The answer of `GET /stats`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stats {
    pub app: String,
    pub version: String,
    pub served_by: Option<String>,
}

/// Static facts about the deployment (and which resource config answered).
#[remote(API, method = "GET", path = "/stats")]
fn stats() -> Result<Stats> {
    Ok(Stats {
        app: "quickstart".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        served_by: flash_sdk::current_resource(),
    })
}

/// 64-bit FNV-1a: a stable hash (std's `DefaultHasher` is not guaranteed stable).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

flash_sdk::export_app!();
