//! SyncBatchNorm: replicas in threads, each with its part of a batch and an in-memory sum
//! between them, end with exactly what one BatchNorm over the whole batch computes: outputs,
//! running statistics, input gradients (for the sum of every replica's loss), and weight and
//! bias gradients that add up to the whole batch's. Without the synchronisation they do not.

mod common;
use candle_core::{DType, Device, Result, Tensor, Var};
use common::*;
use maxsup_ops::{batch_norm2d_relu, sync_batch_norm, ReplicaSum};
use std::rc::Rc;
use std::sync::{Arc, Barrier, Mutex};

/// A sum over threads: each writes its values, all wait, each adds them in rank order.
struct Board {
    slots: Mutex<Vec<Vec<f32>>>,
    barrier: Barrier,
}

impl Board {
    fn new(world: usize) -> Arc<Board> {
        Arc::new(Board {
            slots: Mutex::new(vec![vec![]; world]),
            barrier: Barrier::new(world),
        })
    }
}

struct Replica {
    rank: usize,
    world: usize,
    board: Arc<Board>,
}

impl ReplicaSum for Replica {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn sum(&self, t: &Tensor) -> Result<Tensor> {
        let mine = t.flatten_all()?.to_vec1::<f32>()?;
        self.board.slots.lock().unwrap()[self.rank] = mine;
        self.board.barrier.wait();
        let total = {
            let slots = self.board.slots.lock().unwrap();
            let mut total = vec![0f32; slots[0].len()];
            for s in slots.iter() {
                total.iter_mut().zip(s).for_each(|(a, b)| *a += b);
            }
            total
        };
        // Nobody writes the next sum before everyone has read this one.
        self.board.barrier.wait();
        Tensor::from_vec(total, t.shape(), t.device())
    }
}

struct Out {
    y: Tensor,
    dx: Tensor,
    dw: Tensor,
    db: Tensor,
    running: (Tensor, Tensor),
}

/// A BatchNorm+ReLU layer of `c` channels: weight and bias from fixed seeds, fresh running
/// statistics.
struct Layer {
    w: Var,
    b: Var,
    rm: Var,
    rv: Var,
}

impl Layer {
    fn new(c: usize) -> Result<Layer> {
        Ok(Layer {
            w: Var::from_tensor(&(rand_tensor(&[c], 7)? + 1.0)?)?,
            b: rand_var(&[c], 8)?,
            rm: Var::zeros(c, DType::F32, &Device::Cpu)?,
            rv: Var::ones(c, DType::F32, &Device::Cpu)?,
        })
    }

    /// Train mode: normalises with the batch's statistics and moves the running ones.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (w, b) = (self.w.as_tensor(), self.b.as_tensor());
        batch_norm2d_relu(x, w, b, &self.rm, &self.rv, true, 0.1, 1e-5)
    }
}

/// The layer on `x` with loss `sum(y * r)`: output, gradients and running statistics.
fn bn(x: &Tensor, r: &Tensor) -> Result<Out> {
    let layer = Layer::new(x.dim(1)?)?;
    let x = Var::from_tensor(x)?;
    let y = layer.forward(x.as_tensor())?;
    let grads = (&y * r)?.sum_all()?.backward()?;
    let g = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
    Ok(Out {
        dx: g(&x),
        dw: g(&layer.w),
        db: g(&layer.b),
        y,
        running: (layer.rm.as_tensor().clone(), layer.rv.as_tensor().clone()),
    })
}

fn replicas(x: &Tensor, r: &Tensor, world: usize, synced: bool) -> Vec<Out> {
    let board = Board::new(world);
    let part = x.dim(0).unwrap() / world;
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let board = board.clone();
            let x = x.narrow(0, rank * part, part).unwrap();
            let r = r.narrow(0, rank * part, part).unwrap();
            std::thread::spawn(move || {
                let _guard =
                    synced.then(|| sync_batch_norm(Rc::new(Replica { rank, world, board })));
                bn(&x, &r).unwrap()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn cat(parts: &[&Tensor]) -> Tensor {
    Tensor::cat(parts, 0).unwrap()
}

#[test]
fn synchronised_replicas_compute_the_whole_batch() -> Result<()> {
    let (n, c, h, w) = (6, 4, 5, 3);
    // Channels with offsets and scales, so the statistics of the parts differ.
    let x = ((rand_tensor(&[n, c, h, w], 3)? * 3.0)? + 0.7)?;
    let x = x.broadcast_mul(
        &Tensor::new(&[1f32, 0.2, 5.0, 1.5], &Device::Cpu)?.reshape((1, c, 1, 1))?,
    )?;
    let r = rand_tensor(&[n, c, h, w], 4)?;
    let whole = bn(&x, &r)?;
    for world in [2, 3] {
        let parts = replicas(&x, &r, world, true);
        let ys: Vec<&Tensor> = parts.iter().map(|p| &p.y).collect();
        let dxs: Vec<&Tensor> = parts.iter().map(|p| &p.dx).collect();
        assert_close(&cat(&ys), &whole.y, 1e-5, "outputs")?;
        assert_close(&cat(&dxs), &whole.dx, 1e-5, "input gradients")?;
        let dw = parts
            .iter()
            .skip(1)
            .try_fold(parts[0].dw.clone(), |a, p| &a + &p.dw)?;
        let db = parts
            .iter()
            .skip(1)
            .try_fold(parts[0].db.clone(), |a, p| &a + &p.db)?;
        assert_close(&dw, &whole.dw, 1e-5, "summed weight gradients")?;
        assert_close(&db, &whole.db, 1e-5, "summed bias gradients")?;
        for p in &parts {
            assert_close(&p.running.0, &whole.running.0, 1e-6, "running mean")?;
            assert_close(&p.running.1, &whole.running.1, 1e-6, "running var")?;
        }
    }
    // The same parts without synchronisation normalise with their own statistics.
    let parts = replicas(&x, &r, 2, false);
    let ys: Vec<&Tensor> = parts.iter().map(|p| &p.y).collect();
    assert!(rel_err(&cat(&ys), &whole.y)? > 1e-2);
    Ok(())
}

#[test]
fn backward_without_the_replicas_is_an_error() -> Result<()> {
    let x = rand_tensor(&[2, 2, 3, 3], 5)?;
    let layer = Layer::new(2)?;
    let guard = sync_batch_norm(Rc::new(Replica {
        rank: 0,
        world: 1,
        board: Board::new(1),
    }));
    let y = layer.forward(&x)?;
    drop(guard);
    let e = y.sum_all()?.backward().unwrap_err().to_string();
    assert!(e.contains("without the replicas installed"), "{e}");
    Ok(())
}
