//! The Rust half of the polyglot example: a CPU queue endpoint, `text_stats`.
//!
//! * `word_stats` counts words; the Python route `POST /analyze` calls it.
//! * `headline` calls the Python function `summarize` (on the `py_worker` endpoint) by
//!   name with [`flash_sdk::peer_call`]: a call across languages and endpoints.
//! * `exclaim` calls the JavaScript function `shout` (on the `js_worker` endpoint).

use flash_sdk::{Error, ResourceConfig, Result, remote};
use serde::{Deserialize, Serialize};

/// CPU queue endpoint, scale to zero.
const TEXT: ResourceConfig = ResourceConfig::queue("text_stats")
    .cpu(&["cpu3c-1-2"])
    .workers(0, 2);

/// What `word_stats` returns.
#[derive(Debug, Serialize, Deserialize)]
pub struct WordStats {
    pub words: usize,
    pub longest: String,
    pub language: String,
}

/// Counts the words of `text` and finds the longest.
#[remote(TEXT)]
fn word_stats(text: String) -> Result<WordStats> {
    let longest = text
        .split_whitespace()
        .fold("", |best, w| if w.len() > best.len() { w } else { best });
    Ok(WordStats {
        words: text.split_whitespace().count(),
        longest: longest.to_string(),
        language: "rust".into(),
    })
}

/// Upper-cases the summary that the Python function `summarize` writes for `text`.
#[remote(TEXT)]
fn headline(text: String) -> Result<String> {
    let input = serde_json::json!({ "text": text }).to_string();
    let summary = flash_sdk::peer_call("summarize", &input)?;
    let summary: String = serde_json::from_str(&summary)
        .map_err(|e| Error::internal(format!("`summarize` returned no string: {e}")))?;
    Ok(summary.to_uppercase())
}

/// The JavaScript function `shout`'s answer for `text`, with its length.
#[remote(TEXT)]
fn exclaim(text: String) -> Result<String> {
    let input = serde_json::json!({ "text": text }).to_string();
    let shouted = flash_sdk::peer_call("shout", &input)?;
    let shouted: String = serde_json::from_str(&shouted)
        .map_err(|e| Error::internal(format!("`shout` returned no string: {e}")))?;
    Ok(format!("{shouted} ({} characters)", shouted.chars().count()))
}

flash_sdk::export_app!();
