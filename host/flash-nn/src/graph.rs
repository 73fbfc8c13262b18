//! [`Graph`]: one ONNX model with a pool of sessions, run off the async runtime.
//!
//! - **A pool, not one session.** `ort` runs a session through `&mut Session`, so one
//!   session serves one inference at a time. Each graph holds `sessions` sessions (parsed
//!   once, at load) behind a semaphore: up to that many calls compute in parallel, the
//!   rest wait asynchronously (no thread is parked while waiting).
//! - **Off the async runtime, thread-affine.** Inference is CPU- (or GPU-) bound native
//!   code. Each session lives on its own OS thread (`flash-nn:<graph>:<n>`) that runs the
//!   jobs sent to it, so the async workers keep serving other requests, heartbeats and
//!   guest code meanwhile, and a session always computes on the same thread — as a Python
//!   thread holding its own `InferenceSession` does. (Handing sessions to whichever
//!   `spawn_blocking` thread was free measured 1.4× instead of 1.9× scaling from 1 to 2
//!   threads on a compute-bound model; see docs/benchmarks.md.)
//! - **Deadlines.** Waiting for a session and computing both stop at the call's deadline:
//!   the run is told to terminate (ONNX Runtime's run option) and the guest gets
//!   `timeout`. The session returns to the pool when the native run has ended.
//! - **Threads.** Each session uses `intra_threads` threads (default 1): parallelism comes
//!   from concurrent calls on separate sessions, which suits serving many small requests.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use ort::execution_providers::CUDAExecutionProvider;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session};
use ort::tensor::TensorElementType;
use ort::value::ValueType;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::NnError;
use crate::placement::{Device, Placement, Target};
use crate::runtime::OnnxRuntime;
use crate::tensor::Tensor;

/// How a graph is loaded.
#[derive(Debug, Clone, Copy)]
pub struct GraphOptions {
    pub target: Target,
    /// Sessions in the pool: how many inferences of this graph run at once.
    pub sessions: usize,
    /// ONNX Runtime intra-op threads per session.
    pub intra_threads: usize,
}

impl Default for GraphOptions {
    fn default() -> Self {
        Self {
            target: Target::Cpu,
            sessions: 1,
            intra_threads: 1,
        }
    }
}

/// A graph input or output as the model declares it.
#[derive(Debug, Clone)]
pub struct IoSpec {
    pub name: String,
    /// `None` for non-tensor values.
    pub ty: Option<TensorElementType>,
    /// `-1` marks a dynamic dimension.
    pub shape: Vec<i64>,
}

/// A loaded model.
pub struct Graph {
    name: String,
    placement: Placement,
    sessions: usize,
    inputs: Vec<IoSpec>,
    outputs: Vec<IoSpec>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("name", &self.name)
            .field("placement", &self.placement)
            .field("sessions", &self.sessions)
            .finish()
    }
}

struct Pool {
    /// Indices of the session threads with no job.
    idle: Mutex<Vec<usize>>,
    /// One job channel per session thread.
    threads: Vec<std::sync::mpsc::Sender<Job>>,
    permits: Arc<Semaphore>,
}

type Outputs = Result<Vec<(String, Tensor)>, NnError>;

/// One inference for a session thread.
struct Job {
    inputs: Vec<(String, Tensor)>,
    options: Arc<RunOptions>,
    reply: tokio::sync::oneshot::Sender<Outputs>,
    /// Released by the session thread once the native run has ended (also when the caller
    /// gave up on it), so the next job never queues behind an abandoned one.
    _lease: Lease,
}

/// A session thread taken from the pool; goes back on drop.
struct Lease {
    pool: Arc<Pool>,
    thread: usize,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.thread);
    }
}

/// Starts the thread that owns `session` and runs its jobs until the pool is dropped.
fn spawn_session_thread(
    graph: &str,
    index: usize,
    mut session: Session,
) -> Result<std::sync::mpsc::Sender<Job>, NnError> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name(format!("flash-nn:{graph}:{index}"))
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                let Job {
                    inputs,
                    options,
                    reply,
                    _lease,
                } = job;
                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(&mut session, inputs, &options)
                }))
                .unwrap_or_else(|_| Err(NnError::Runtime("inference panicked".into())));
                // Free the session before answering, so the caller's next call finds it.
                drop(_lease);
                let _ = reply.send(out);
            }
        })
        .map_err(|e| NnError::Runtime(format!("starting a session thread: {e}")))?;
    Ok(tx)
}

impl Graph {
    /// Parses `model` (ONNX bytes) into `options.sessions` sessions on the device
    /// `options.target` resolves to. Blocking: call it at start-up or on a blocking thread.
    pub fn load(
        runtime: &OnnxRuntime,
        name: &str,
        model: &[u8],
        options: &GraphOptions,
    ) -> Result<Self, NnError> {
        let sessions = options.sessions.max(1);
        let threads = options.intra_threads.max(1);
        let (first, placement) = match options.target {
            Target::Tpu => {
                return Err(NnError::Unsupported(format!(
                    "graph `{name}`: execution target `tpu` is not supported by this host \
                     (ONNX Runtime serves cpu, and gpu through CUDA)"
                )));
            }
            Target::Cpu => (
                build_session(model, Device::Cpu, threads)?,
                Placement {
                    requested: Target::Cpu,
                    device: Device::Cpu,
                    fallback: None,
                },
            ),
            Target::Gpu => {
                let cuda = if runtime.has_cuda_provider() {
                    build_session(model, Device::Cuda, threads)
                        .map_err(|e| format!("the CUDA execution provider did not start ({e})"))
                } else {
                    Err(format!(
                        "the ONNX Runtime at {} (version {}) has no CUDA execution provider \
                         (install onnxruntime-gpu and point ORT_DYLIB_PATH at its library)",
                        runtime.path().display(),
                        runtime.version()
                    ))
                };
                match cuda {
                    Ok(session) => (
                        session,
                        Placement {
                            requested: Target::Gpu,
                            device: Device::Cuda,
                            fallback: None,
                        },
                    ),
                    Err(reason) => {
                        tracing::warn!(
                            graph = name,
                            %reason,
                            "execution target gpu requested, running on the CPU"
                        );
                        (
                            build_session(model, Device::Cpu, threads)?,
                            Placement {
                                requested: Target::Gpu,
                                device: Device::Cpu,
                                fallback: Some(reason),
                            },
                        )
                    }
                }
            }
        };
        let inputs = first
            .inputs
            .iter()
            .map(|i| spec(&i.name, &i.input_type))
            .collect();
        let outputs = first
            .outputs
            .iter()
            .map(|o| spec(&o.name, &o.output_type))
            .collect();
        let mut session_threads = vec![spawn_session_thread(name, 0, first)?];
        for i in 1..sessions {
            let session = build_session(model, placement.device, threads)?;
            session_threads.push(spawn_session_thread(name, i, session)?);
        }
        Ok(Self {
            name: name.to_string(),
            placement,
            sessions,
            inputs,
            outputs,
            pool: Arc::new(Pool {
                idle: Mutex::new((0..sessions).rev().collect()),
                threads: session_threads,
                permits: Arc::new(Semaphore::new(sessions)),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Size of the session pool.
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    pub fn inputs(&self) -> &[IoSpec] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[IoSpec] {
        &self.outputs
    }

    /// Runs one inference with named inputs; returns every output, in the model's order.
    /// Waits for a free session and computes on its thread; both stop at `deadline`.
    pub async fn compute(
        &self,
        inputs: Vec<(String, Tensor)>,
        deadline: Option<Instant>,
    ) -> Result<Vec<(String, Tensor)>, NnError> {
        self.check_inputs(&inputs)?;
        let timeout = || {
            NnError::Timeout(format!(
                "graph `{}`: the call's deadline passed during inference",
                self.name
            ))
        };
        let acquire = Arc::clone(&self.pool.permits).acquire_owned();
        let permit = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), acquire)
                .await
                .map_err(|_| timeout())?,
            None => acquire.await,
        }
        .map_err(|_| NnError::Runtime("session pool closed".into()))?;
        let thread = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .ok_or_else(|| NnError::Runtime("session pool out of sessions".into()))?;
        let lease = Lease {
            pool: Arc::clone(&self.pool),
            thread,
            _permit: permit,
        };
        let run_options = Arc::new(RunOptions::new()?);
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.pool.threads[thread]
            .send(Job {
                inputs,
                options: Arc::clone(&run_options),
                reply,
                _lease: lease,
            })
            .map_err(|_| NnError::Runtime("the session thread has stopped".into()))?;
        let answered = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), answer).await {
                Ok(answered) => answered,
                Err(_) => {
                    // The native run stops at its next check; the session thread then
                    // returns itself to the pool.
                    let _ = run_options.terminate();
                    return Err(timeout());
                }
            },
            None => answer.await,
        };
        answered.map_err(|_| NnError::Runtime("the session thread dropped the call".into()))?
    }

    fn check_inputs(&self, inputs: &[(String, Tensor)]) -> Result<(), NnError> {
        let names = || {
            self.inputs
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (name, tensor) in inputs {
            let Some(spec) = self.inputs.iter().find(|i| &i.name == name) else {
                return Err(NnError::InvalidArgument(format!(
                    "graph `{}` has no input `{name}` (its inputs: {})",
                    self.name,
                    names()
                )));
            };
            tensor.check(name)?;
            if let Some(want) = spec.ty
                && tensor.ty.onnx() != Some(want)
            {
                return Err(NnError::InvalidArgument(format!(
                    "input `{name}` of graph `{}` takes {want:?} elements, got {:?}",
                    self.name, tensor.ty
                )));
            }
            let fits = spec.shape.len() == tensor.dimensions.len()
                && spec
                    .shape
                    .iter()
                    .zip(&tensor.dimensions)
                    .all(|(&want, &got)| want < 0 || want == i64::from(got));
            if !fits {
                return Err(NnError::InvalidArgument(format!(
                    "input `{name}` of graph `{}` has shape {:?} (-1 = any), got {:?}",
                    self.name, spec.shape, tensor.dimensions
                )));
            }
        }
        for spec in &self.inputs {
            if !inputs.iter().any(|(n, _)| n == &spec.name) {
                return Err(NnError::InvalidArgument(format!(
                    "graph `{}` needs input `{}` (its inputs: {})",
                    self.name,
                    spec.name,
                    names()
                )));
            }
        }
        Ok(())
    }
}

fn run(
    session: &mut Session,
    inputs: Vec<(String, Tensor)>,
    options: &RunOptions,
) -> Result<Vec<(String, Tensor)>, NnError> {
    let mut values = Vec::with_capacity(inputs.len());
    for (name, tensor) in &inputs {
        values.push((name.as_str(), tensor.to_ort(name)?));
    }
    let outputs = session.run_with_options(values, options)?;
    outputs
        .iter()
        .map(|(name, value)| Ok((name.to_string(), Tensor::from_ort(name, &value)?)))
        .collect()
}

fn build_session(model: &[u8], device: Device, threads: usize) -> Result<Session, NnError> {
    let mut builder = Session::builder()?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_intra_threads(threads)?
        .with_inter_threads(1)?;
    if device == Device::Cuda {
        builder = builder.with_execution_providers([CUDAExecutionProvider::default()
            .build()
            .error_on_failure()])?;
    }
    Ok(builder.commit_from_memory(model)?)
}

fn spec(name: &str, ty: &ValueType) -> IoSpec {
    match ty {
        ValueType::Tensor { ty, shape, .. } => IoSpec {
            name: name.to_string(),
            ty: Some(*ty),
            shape: shape.iter().copied().collect(),
        },
        _ => IoSpec {
            name: name.to_string(),
            ty: None,
            shape: vec![],
        },
    }
}
