//! [`Matrix`]: a batch of `f32` rows as a function argument, in JSON or in binary.
//!
//! Numbers in JSON are the slow part of a batch request: a guest parses each one (about
//! 50 ns natively, several times that in wasm), which for a few thousand features costs
//! more than a small model's inference. A `Matrix` parameter accepts both
//!
//! * nested arrays, `[[0.5, -1.0], [2.0, 0.25]]` (rows of equal length), and
//! * the binary form, `{"shape": [rows, cols], "f32_le_base64": "..."}`: the row-major
//!   values as little-endian `float32` bytes, base64-encoded — in Python
//!   `base64.b64encode(x.astype("<f4").tobytes())` — decoded at memory speed.
//!
//! It serialises as nested arrays.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// A row-major `rows × cols` matrix of `f32` (a batch of feature rows).
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    /// A matrix from row-major `data`; `None` if `data.len() != rows * cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Option<Self> {
        (rows.checked_mul(cols) == Some(data.len())).then_some(Self { rows, cols, data })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The values, row after row.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Row `i` (panics if out of range, like slice indexing).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The binary form of this matrix (what a client sends for speed), as JSON.
    pub fn to_binary_json(&self) -> serde_json::Value {
        let mut bytes = Vec::with_capacity(self.data.len() * 4);
        for v in &self.data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        serde_json::json!({
            "shape": [self.rows, self.cols],
            "f32_le_base64": BASE64.encode(bytes),
        })
    }
}

impl Serialize for Matrix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.rows))?;
        for i in 0..self.rows {
            seq.serialize_element(self.row(i))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Matrix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MatrixVisitor)
    }
}

struct MatrixVisitor;

impl<'de> Visitor<'de> for MatrixVisitor {
    type Value = Matrix;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(
            "rows of numbers (`[[1.0, 2.0], [3.0, 4.0]]`) or \
             `{\"shape\": [rows, cols], \"f32_le_base64\": \"...\"}`",
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Matrix, A::Error> {
        let mut data = Vec::new();
        let mut rows = 0;
        let mut cols = None;
        while let Some(row) = seq.next_element::<Vec<f32>>()? {
            match cols {
                None => cols = Some(row.len()),
                Some(width) if width != row.len() => {
                    return Err(de::Error::custom(format!(
                        "row {rows} has {} values, row 0 has {width}",
                        row.len()
                    )));
                }
                Some(_) => {}
            }
            data.extend_from_slice(&row);
            rows += 1;
        }
        Ok(Matrix {
            rows,
            cols: cols.unwrap_or(0),
            data,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Matrix, A::Error> {
        let mut shape: Option<[usize; 2]> = None;
        let mut encoded: Option<String> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "shape" => shape = Some(map.next_value()?),
                "f32_le_base64" => encoded = Some(map.next_value()?),
                other => {
                    return Err(de::Error::unknown_field(other, &["shape", "f32_le_base64"]));
                }
            }
        }
        let [rows, cols] = shape.ok_or_else(|| de::Error::missing_field("shape"))?;
        let encoded = encoded.ok_or_else(|| de::Error::missing_field("f32_le_base64"))?;
        let bytes = BASE64
            .decode(encoded.as_bytes())
            .map_err(|e| de::Error::custom(format!("`f32_le_base64` is not base64: {e}")))?;
        let expected = rows.checked_mul(cols).and_then(|n| n.checked_mul(4));
        if expected != Some(bytes.len()) {
            return Err(de::Error::custom(format!(
                "shape [{rows}, {cols}] needs {} bytes of float32, `f32_le_base64` holds {}",
                expected.map_or_else(|| "more".to_string(), |n| n.to_string()),
                bytes.len()
            )));
        }
        let data = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Matrix { rows, cols, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_arrays_and_the_binary_form_decode_alike() {
        let json: Matrix = serde_json::from_str("[[0.5, -1], [2e0, 0.25]]").unwrap();
        assert_eq!((json.rows(), json.cols()), (2, 2));
        assert_eq!(json.data(), [0.5, -1.0, 2.0, 0.25]);
        assert_eq!(json.row(1), [2.0, 0.25]);
        let binary: Matrix = serde_json::from_value(json.to_binary_json()).unwrap();
        assert_eq!(binary, json);
        assert_eq!(
            serde_json::to_string(&binary).unwrap(),
            "[[0.5,-1.0],[2.0,0.25]]"
        );
        let empty: Matrix = serde_json::from_str("[]").unwrap();
        assert_eq!((empty.rows(), empty.cols()), (0, 0));
    }

    #[test]
    fn malformed_matrices_are_explained() {
        let err = |text: &str| {
            serde_json::from_str::<Matrix>(text)
                .unwrap_err()
                .to_string()
        };
        let ragged = err("[[1, 2], [3]]");
        assert!(
            ragged.starts_with("row 1 has 1 values, row 0 has 2"),
            "{ragged}"
        );
        let short = err(r#"{"shape": [1, 2], "f32_le_base64": "AAAA"}"#);
        assert!(
            short.starts_with("shape [1, 2] needs 8 bytes of float32, `f32_le_base64` holds 3"),
            "{short}"
        );
        assert!(err(r#"{"shape": [1, 1], "f32_le_base64": "*"}"#).contains("is not base64"));
        assert!(err(r#"{"f32_le_base64": ""}"#).starts_with("missing field `shape`"));
        assert!(err(r#"{"shape": [0, 0], "dtype": "f16"}"#).starts_with("unknown field `dtype`"));
        assert!(err("\"rows\"").contains("rows of numbers"));
        assert!(Matrix::new(2, 2, vec![1.0; 3]).is_none());
    }
}
