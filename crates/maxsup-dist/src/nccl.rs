//! [`NcclCollective`]: the collective of a data-parallel run on CUDA. Tensor reductions and
//! broadcasts run in NCCL on candle's own stream (so they are ordered after the kernels that
//! produced the gradients, with no extra synchronisation); host-side exchanges (metrics,
//! checksums) and fault detection go over the rendezvous sockets, which also carried NCCL's
//! unique id from rank 0 to the others.
//!
//! Faults: an NCCL operation whose peer died never completes on its own, so every operation is
//! waited for with a bound. While it runs, the sockets of the other ranks are watched: one that
//! closes (its process ended) stops the wait at once with an error naming the rank; a wait that
//! passes `MAXSUP_COLLECTIVE_TIMEOUT` names the operation and the timeout. Dropping the
//! communicator then aborts it (`ncclCommAbort`), which also releases the stuck kernels.
//!
//! Two ranks cannot share one GPU: NCCL refuses duplicate devices at initialisation.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::nccl::{result::NcclError, sys, Comm, Id, ReduceOp};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

use crate::collective::Collective;
use crate::host_group::HostGroup;
use crate::world::World;

/// NCCL's unique id is 128 bytes (`ncclUniqueId`).
const ID_BYTES: usize = 128;

/// NCCL for tensors on one GPU per rank, the rendezvous sockets for everything else.
pub struct NcclCollective {
    comm: Comm,
    /// This rank's GPU.
    cuda: CudaDevice,
    group: HostGroup,
    timeout: Duration,
}

impl NcclCollective {
    /// Joins `world` on `device` (this rank's GPU): the TCP rendezvous hands rank 0's NCCL id
    /// to every rank, then every rank initialises its communicator. `agreement` must be equal
    /// on every rank; `rendezvous` bounds the joining, `timeout` every later wait.
    pub fn join(
        world: &World,
        agreement: &[u8],
        device: &Device,
        rendezvous: Duration,
        timeout: Duration,
    ) -> Result<Self> {
        let Device::Cuda(cuda) = device else {
            bail!("NCCL runs on CUDA devices; this rank's device is {device:?}");
        };
        prepare_nccl_environment()?;
        let id = if world.rank == 0 {
            let id = Id::new().map_err(|e| nccl_error(e, "creating NCCL's unique id"))?;
            id.internal().iter().map(|&c| c as u8).collect()
        } else {
            vec![]
        };
        let (group, payload) = HostGroup::join(world, agreement, &id, rendezvous, timeout)?;
        let id = id_from_bytes(&payload)?;
        let comm = init_bounded(cuda, world, id, &group, rendezvous)?;
        Ok(Self {
            comm,
            cuda: cuda.clone(),
            group,
            timeout,
        })
    }

    /// NCCL's version as `major.minor.patch`.
    pub fn version() -> Result<String> {
        let v = candle_core::cuda_backend::cudarc::nccl::result::get_nccl_version()
            .map_err(|e| nccl_error(e, "asking NCCL's version"))?;
        Ok(format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100))
    }

    fn run(&mut self, t: &Tensor, kind: Kind) -> Result<Tensor> {
        anyhow::ensure!(
            t.dtype() == DType::F32,
            "NCCL {} of a {:?} tensor: only f32 is reduced",
            kind.name(),
            t.dtype()
        );
        anyhow::ensure!(
            t.device().same_device(&self.device()),
            "NCCL {} of a tensor on {:?}: this rank's communicator is on {:?}",
            kind.name(),
            t.device(),
            self.device()
        );
        if t.elem_count() == 0 {
            return Ok(t.clone());
        }
        let out = t.contiguous()?.apply_op1_no_bwd(&NcclOp {
            comm: &self.comm,
            kind,
        })?;
        self.settle(kind.name())?;
        Ok(out)
    }

    /// Waits, with a bound, until the work queued on the stream so far (the NCCL operation) is
    /// done, watching the other ranks' sockets meanwhile.
    fn settle(&mut self, what: &str) -> Result<()> {
        let done = self
            .cuda
            .cuda_stream()
            .record_event(None)
            .with_context(|| format!("recording an event after the NCCL {what}"))?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(20);
        loop {
            if done
                .try_is_complete()
                .with_context(|| format!("waiting for the NCCL {what}"))?
            {
                return Ok(());
            }
            if let Some(rank) = self.group.closed_peer() {
                bail!(
                    "rank {rank} exited during an NCCL {what}: the run stopped (checkpoints \
                     written are intact: resume with --resume)"
                );
            }
            if start.elapsed() > self.timeout {
                bail!(
                    "an NCCL {what} did not complete within {} s: a rank is hung or much slower \
                     than the others (MAXSUP_COLLECTIVE_TIMEOUT sets the limit)",
                    self.timeout.as_secs()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.group.rank()
    }

    fn world_size(&self) -> usize {
        self.group.world_size()
    }

    fn device(&self) -> Device {
        Device::Cuda(self.cuda.clone())
    }

    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<Tensor> {
        self.run(t, Kind::Sum)
    }

    fn broadcast(&mut self, t: &Tensor) -> Result<Tensor> {
        self.run(t, Kind::BroadcastFromRoot)
    }

    fn all_reduce_host(&mut self, values: &mut [f64]) -> Result<()> {
        self.group.all_reduce_sum(values)
    }

    fn all_gather_host(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.group.all_gather(mine)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Sum,
    BroadcastFromRoot,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Sum => "all-reduce",
            Kind::BroadcastFromRoot => "broadcast",
        }
    }
}

/// One NCCL operation on a contiguous f32 CUDA tensor, into a fresh buffer (the gradients it
/// reduces may still be referenced by the gradient store).
struct NcclOp<'a> {
    comm: &'a Comm,
    kind: Kind,
}

impl CustomOp1 for NcclOp<'_> {
    fn name(&self) -> &'static str {
        "nccl"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!(
            "NCCL {} of a CPU tensor: NCCL moves CUDA tensors (CPU runs use the TCP collective)",
            self.kind.name()
        )
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("NCCL {}: the tensor must be contiguous", self.kind.name())
        };
        let input = s.as_cuda_slice::<f32>()?.slice(a..b);
        let dev: CudaDevice = s.device().clone();
        // SAFETY: NCCL writes every one of the `b - a` elements (all-reduce and broadcast both
        // fill the whole receive buffer) before anything reads them on this stream.
        let mut out = unsafe { dev.alloc::<f32>(b - a) }?;
        let status = match self.kind {
            Kind::Sum => self.comm.all_reduce(&input, &mut out, &ReduceOp::Sum),
            Kind::BroadcastFromRoot => self.comm.broadcast(Some(&input), &mut out, 0),
        };
        let status = status.and_then(|s| match s {
            // A non-blocking communicator: its work is not ordered with candle's stream.
            candle_core::cuda_backend::cudarc::nccl::result::NcclStatus::InProgress => {
                Err(NcclError(sys::ncclResult_t::ncclInProgress))
            }
            other => Ok(other),
        });
        status.map_err(|e| {
            candle_core::Error::Cuda(
                format!(
                    "{:#}",
                    nccl_error(e, &format!("queueing an NCCL {}", self.kind.name()))
                )
                .into(),
            )
        })?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), l.shape().clone()))
    }
}

/// A communicator on its way from the thread that initialised it.
struct Initialised(Comm);

// SAFETY: an NCCL communicator is not tied to the thread that created it (NCCL only forbids
// using one from several threads at once); it crosses threads exactly once, after
// `ncclCommInitRank` returned, and is then used by the receiving thread alone.
unsafe impl Send for Initialised {}

/// NCCL's environment for this collective, set before its initialisation: every connection is
/// made inside `ncclCommInitRank` (`NCCL_RUNTIME_CONNECT=0`; NCCL 2.22+ otherwise connects at
/// the first collective of each algorithm, inside a call no time limit here bounds, and
/// allocates its buffers then, after the step's activations took the memory), unless the user
/// set it; and non-blocking communicators (`NCCL_COMM_BLOCKING=0`) are refused: NCCL would then
/// queue from its own thread, unordered with candle's per-thread stream.
fn prepare_nccl_environment() -> Result<()> {
    if std::env::var("NCCL_COMM_BLOCKING").is_ok_and(|v| v.trim() == "0") {
        bail!(
            "NCCL_COMM_BLOCKING=0 is not supported: the collectives must run on candle's stream \
             (unset it)"
        );
    }
    if std::env::var_os("NCCL_RUNTIME_CONNECT").is_none() {
        // Set before any thread of ours calls into NCCL (it reads the variable at init).
        std::env::set_var("NCCL_RUNTIME_CONNECT", "0");
    }
    Ok(())
}

/// `ncclCommInitRank`, which blocks until every rank has called it and has no time limit of its
/// own, on a helper thread, waited for with `limit` while watching the other ranks' sockets: a
/// rank that dies or hangs before initialising is an error here, not a silent hang. (On an error
/// the helper stays blocked until the process ends.)
fn init_bounded(
    cuda: &CudaDevice,
    world: &World,
    id: Id,
    group: &HostGroup,
    limit: Duration,
) -> Result<Comm> {
    let stream = cuda.cuda_stream();
    let ordinal = stream.context().ordinal();
    let (rank, size) = (world.rank, world.world_size);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("nccl-init".into())
        .spawn(move || {
            // NCCL takes the device current on the calling thread.
            let result = match stream.context().bind_to_thread() {
                Err(e) => Err(anyhow::anyhow!(
                    "binding GPU {ordinal}'s CUDA context before NCCL's initialisation: {e:?}"
                )),
                Ok(()) => Comm::from_rank(stream, rank, size, id)
                    .map(Initialised)
                    .map_err(|e| {
                        nccl_error(
                            e,
                            &format!(
                                "initialising NCCL as rank {rank} of {size} on GPU {ordinal} (two \
                                 ranks on one GPU are refused by NCCL; each rank needs its own)"
                            ),
                        )
                    }),
            };
            let _ = tx.send(result);
        })
        .context("starting the NCCL initialisation thread")?;
    let start = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(result) => return result.map(|Initialised(comm)| comm),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                bail!("NCCL's initialisation thread ended without an answer")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(peer) = group.closed_peer() {
            bail!("rank {peer} exited while the ranks were initialising NCCL: the run stopped");
        }
        if start.elapsed() > limit {
            bail!(
                "NCCL's initialisation did not complete within {} s (MAXSUP_RDZV_TIMEOUT): a rank \
                 is hung, or the ranks cannot reach each other over NCCL's network (see \
                 NCCL_SOCKET_IFNAME, NCCL_DEBUG=INFO)",
                limit.as_secs()
            );
        }
    }
}

fn id_from_bytes(bytes: &[u8]) -> Result<Id> {
    let Ok(bytes) = <[u8; ID_BYTES]>::try_from(bytes) else {
        bail!(
            "rank 0 sent a {}-byte NCCL id, not {ID_BYTES} bytes (is rank 0 a CPU run? every \
             rank must use the same --device)",
            bytes.len()
        );
    };
    Ok(Id::uninit(bytes.map(|b| b as std::ffi::c_char)))
}

/// NCCL's own description of `e`, with what was being done.
fn nccl_error(e: NcclError, what: &str) -> anyhow::Error {
    // SAFETY: ncclGetErrorString returns a static NUL-terminated string for any result code.
    let text = unsafe {
        let p = sys::ncclGetErrorString(e.0);
        if p.is_null() {
            format!("{:?}", e.0)
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    anyhow::anyhow!("{what}: NCCL error {:?}: {text}", e.0)
}
