//! The `wasi:nn` host: bindings generated from `wit/deps/wasi-nn` with **async** imports.
//!
//! wasmtime's own `wasmtime-wasi-nn` bindings are synchronous, so an inference would run
//! on the tokio worker thread driving the guest and stall every other call scheduled on
//! it. Here `load` awaits work on the blocking pool and `compute` on the graph's session
//! threads instead (see [`crate::graph`]), the call's deadline bounds them, and guest memory caps still apply:
//! every tensor a guest reads back is copied into its own (limited) linear memory.
//!
//! What the guest makes the host hold is charged to the call's [`HostBudget`]: the bytes of
//! every tensor it creates (`tensor.new`), of every inference output until it drops it, and
//! of every model it loads from its own bytes. A charge past the budget traps with
//! [`crate::BudgetExceeded`] (`tensor.new` has no error result, and an error code the guest
//! could ignore would not stop it).
//!
//! Per call, a store holds an [`NnCtx`] (the shared [`Inference`] and the deadline);
//! resources (graphs, contexts, tensors, errors) live in the call's `ResourceTable` and go
//! away with it.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::budget::HostBudget;
use crate::error::NnError;
use crate::graph::{Graph, GraphOptions};
use crate::placement::Target;
use crate::registry::Inference;
use crate::tensor::{Tensor, TensorType};

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/wasi-nn",
        world: "wasi:nn/ml",
        imports: { default: async | trappable },
        with: {
            "wasi:nn/graph.graph": super::GraphResource,
            "wasi:nn/tensor.tensor": crate::tensor::Tensor,
            "wasi:nn/inference.graph-execution-context": super::ExecutionContext,
            "wasi:nn/errors.error": crate::error::NnError,
        },
    });
}

use generated::wasi::nn::{errors, graph, inference, tensor};

/// A graph handle held by a guest: a preloaded graph, or one the guest loaded (with the
/// bytes of its model charged to the call's budget while the guest holds it).
pub struct GraphResource(Arc<Graph>, usize);

/// An execution context (WIT `graph-execution-context`): the graph it computes.
pub struct ExecutionContext(Arc<Graph>);

/// The `wasi:nn` state of one call.
#[derive(Clone, Default)]
pub struct NnCtx {
    pub inference: Inference,
    /// When the call must end: waiting for and running inference stop here.
    pub deadline: Option<Instant>,
}

/// What the bindings need from a store: the call's context, its resource table and its
/// host memory budget.
pub struct NnView<'a> {
    pub ctx: &'a mut NnCtx,
    pub table: &'a mut ResourceTable,
    pub budget: &'a mut HostBudget,
}

struct HasNn;

impl HasData for HasNn {
    type Data<'a> = NnView<'a>;
}

/// Links every `wasi:nn` interface into `linker` (async: instantiate and call with the
/// `_async` methods).
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> NnView<'_>,
) -> wasmtime::Result<()> {
    graph::add_to_linker::<T, HasNn>(linker, view)?;
    tensor::add_to_linker::<T, HasNn>(linker, view)?;
    inference::add_to_linker::<T, HasNn>(linker, view)?;
    errors::add_to_linker::<T, HasNn>(linker, view)?;
    Ok(())
}

type NnResult<T> = wasmtime::Result<Result<T, Resource<NnError>>>;

impl NnView<'_> {
    /// Puts `error` in the table for the guest (and logs it at debug level).
    fn fail<T>(&mut self, error: NnError) -> NnResult<T> {
        tracing::debug!(%error, "wasi-nn call failed");
        Ok(Err(self.table.push(error)?))
    }
}

impl graph::Host for NnView<'_> {
    async fn load(
        &mut self,
        builders: Vec<graph::GraphBuilder>,
        encoding: graph::GraphEncoding,
        target: graph::ExecutionTarget,
    ) -> NnResult<Resource<GraphResource>> {
        if !matches!(
            encoding,
            graph::GraphEncoding::Onnx | graph::GraphEncoding::Autodetect
        ) {
            return self.fail(NnError::InvalidEncoding(format!(
                "{encoding:?} models are not supported: this host runs ONNX models"
            )));
        }
        if builders.len() != 1 {
            return self.fail(NnError::InvalidArgument(format!(
                "an ONNX graph is loaded from exactly one builder (the model bytes), got {}",
                builders.len()
            )));
        }
        let Some(model) = builders.into_iter().next() else {
            unreachable!("length checked")
        };
        let runtime = match self.ctx.inference.runtime() {
            Ok(rt) => rt.clone(),
            Err(e) => return self.fail(e),
        };
        // The model's bytes stand for what the session holds while the guest keeps the graph.
        let held = model.len();
        self.budget.hold("a wasi:nn model the guest loaded", held)?;
        let options = GraphOptions {
            target: target.into(),
            sessions: 1,
            intra_threads: 1,
        };
        // Parsing a model is heavy native work: off the async workers too.
        let task = tokio::task::spawn_blocking(move || {
            Graph::load(&runtime, "guest-loaded", &model, &options)
        });
        let joined = match self.ctx.deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), task).await {
                Ok(joined) => joined,
                Err(_) => {
                    return self.fail(NnError::Timeout(
                        "the call's deadline passed while loading the model".into(),
                    ));
                }
            },
            None => task.await,
        };
        match joined {
            Ok(Ok(graph)) => Ok(Ok(self.table.push(GraphResource(Arc::new(graph), held))?)),
            Ok(Err(e)) => {
                self.budget.release(held);
                self.fail(e)
            }
            Err(e) => {
                self.budget.release(held);
                self.fail(NnError::Runtime(format!("model loading failed: {e}")))
            }
        }
    }

    async fn load_by_name(&mut self, name: String) -> NnResult<Resource<GraphResource>> {
        match self.ctx.inference.get(&name) {
            Ok(graph) => Ok(Ok(self.table.push(GraphResource(graph, 0))?)),
            Err(e) => self.fail(e),
        }
    }
}

impl graph::HostGraph for NnView<'_> {
    async fn init_execution_context(
        &mut self,
        graph: Resource<GraphResource>,
    ) -> NnResult<Resource<ExecutionContext>> {
        let graph = Arc::clone(&self.table.get(&graph)?.0);
        Ok(Ok(self.table.push(ExecutionContext(graph))?))
    }

    async fn drop(&mut self, graph: Resource<GraphResource>) -> wasmtime::Result<()> {
        let graph = self.table.delete(graph)?;
        self.budget.release(graph.1);
        Ok(())
    }
}

impl inference::Host for NnView<'_> {}

impl inference::HostGraphExecutionContext for NnView<'_> {
    async fn compute(
        &mut self,
        context: Resource<ExecutionContext>,
        inputs: Vec<inference::NamedTensor>,
    ) -> NnResult<Vec<inference::NamedTensor>> {
        let graph = Arc::clone(&self.table.get(&context)?.0);
        let mut tensors = Vec::with_capacity(inputs.len());
        let mut input_bytes = 0usize;
        for (name, tensor) in inputs {
            // The guest passes ownership of its input tensors (WIT `own<tensor>`); their
            // bytes are given back once the computation is done with them.
            let tensor = self.table.delete(tensor)?;
            input_bytes = input_bytes.saturating_add(tensor.data.len());
            tensors.push((name, tensor));
        }
        let result = graph.compute(tensors, self.ctx.deadline).await;
        self.budget.release(input_bytes);
        match result {
            Ok(outputs) => {
                let mut named = Vec::with_capacity(outputs.len());
                for (name, tensor) in outputs {
                    self.budget
                        .hold("a wasi:nn inference output", tensor.data.len())?;
                    named.push((name, self.table.push(tensor)?));
                }
                Ok(Ok(named))
            }
            Err(e) => self.fail(e),
        }
    }

    async fn drop(&mut self, context: Resource<ExecutionContext>) -> wasmtime::Result<()> {
        self.table.delete(context)?;
        Ok(())
    }
}

impl tensor::Host for NnView<'_> {}

impl tensor::HostTensor for NnView<'_> {
    async fn new(
        &mut self,
        dimensions: tensor::TensorDimensions,
        ty: tensor::TensorType,
        data: tensor::TensorData,
    ) -> wasmtime::Result<Resource<Tensor>> {
        // `data` is already a host copy of guest bytes: charged before the host keeps it.
        self.budget.hold("a wasi:nn tensor", data.len())?;
        Ok(self.table.push(Tensor {
            dimensions,
            ty: ty.into(),
            data,
        })?)
    }

    async fn dimensions(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&tensor)?.dimensions.clone())
    }

    async fn ty(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<tensor::TensorType> {
        Ok(self.table.get(&tensor)?.ty.into())
    }

    async fn data(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&tensor)?.data.clone())
    }

    async fn drop(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<()> {
        let tensor = self.table.delete(tensor)?;
        self.budget.release(tensor.data.len());
        Ok(())
    }
}

impl errors::Host for NnView<'_> {}

impl errors::HostError for NnView<'_> {
    async fn code(&mut self, error: Resource<NnError>) -> wasmtime::Result<errors::ErrorCode> {
        Ok(match self.table.get(&error)? {
            NnError::InvalidArgument(_) => errors::ErrorCode::InvalidArgument,
            NnError::InvalidEncoding(_) => errors::ErrorCode::InvalidEncoding,
            NnError::NotFound(_) => errors::ErrorCode::NotFound,
            NnError::Unsupported(_) => errors::ErrorCode::UnsupportedOperation,
            NnError::Timeout(_) => errors::ErrorCode::Timeout,
            NnError::Runtime(_) => errors::ErrorCode::RuntimeError,
        })
    }

    async fn data(&mut self, error: Resource<NnError>) -> wasmtime::Result<String> {
        Ok(self.table.get(&error)?.to_string())
    }

    async fn drop(&mut self, error: Resource<NnError>) -> wasmtime::Result<()> {
        self.table.delete(error)?;
        Ok(())
    }
}

impl From<graph::ExecutionTarget> for Target {
    fn from(t: graph::ExecutionTarget) -> Self {
        match t {
            graph::ExecutionTarget::Cpu => Self::Cpu,
            graph::ExecutionTarget::Gpu => Self::Gpu,
            graph::ExecutionTarget::Tpu => Self::Tpu,
        }
    }
}

impl From<tensor::TensorType> for TensorType {
    fn from(t: tensor::TensorType) -> Self {
        match t {
            tensor::TensorType::Fp16 => Self::Fp16,
            tensor::TensorType::Fp32 => Self::Fp32,
            tensor::TensorType::Fp64 => Self::Fp64,
            tensor::TensorType::Bf16 => Self::Bf16,
            tensor::TensorType::U8 => Self::U8,
            tensor::TensorType::I32 => Self::I32,
            tensor::TensorType::I64 => Self::I64,
        }
    }
}

impl From<TensorType> for tensor::TensorType {
    fn from(t: TensorType) -> Self {
        match t {
            TensorType::Fp16 => Self::Fp16,
            TensorType::Fp32 => Self::Fp32,
            TensorType::Fp64 => Self::Fp64,
            TensorType::Bf16 => Self::Bf16,
            TensorType::U8 => Self::U8,
            TensorType::I32 => Self::I32,
            TensorType::I64 => Self::I64,
        }
    }
}
