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

/// BatchNorm+ReLU of `x` with weight/bias from fixed seeds, loss `sum(y * r)`.
fn bn(x: &Tensor, r: &Tensor) -> Result<Out> {
    let c = x.dim(1)?;
    let w = Var::from_tensor(&(rand_tensor(&[c], 7)? + 1.0)?)?;
    let b = rand_var(&[c], 8)?;
    let rm = Var::zeros(c, DType::F32, &Device::Cpu)?;
    let rv = Var::ones(c, DType::F32, &Device::Cpu)?;
    let x = Var::from_tensor(x)?;
    let y = batch_norm2d_relu(
        x.as_tensor(),
        w.as_tensor(),
        b.as_tensor(),
        &rm,
        &rv,
        true,
        0.1,
        1e-5,
    )?;
    let grads = (&y * r)?.sum_all()?.backward()?;
    let g = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
    Ok(Out {
        dx: g(&x),
        dw: g(&w),
        db: g(&b),
        y,
        running: (rm.as_tensor().clone(), rv.as_tensor().clone()),
    })
}

fn replicas(x: &Tensor, r: &Tensor, world: usize, synced: bool) -> Vec<Out> {
    let board = Arc::new(Board {
        slots: Mutex::new(vec![vec![]; world]),
        barrier: Barrier::new(world),
    });
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
    let x = Var::from_tensor(&rand_tensor(&[2, 2, 3, 3], 5)?)?;
    let (w, b) = (rand_var(&[2], 6)?, rand_var(&[2], 7)?);
    let rm = Var::zeros(2, DType::F32, &Device::Cpu)?;
    let rv = Var::ones(2, DType::F32, &Device::Cpu)?;
    let board = Arc::new(Board {
        slots: Mutex::new(vec![vec![]]),
        barrier: Barrier::new(1),
    });
    let guard = sync_batch_norm(Rc::new(Replica {
        rank: 0,
        world: 1,
        board,
    }));
    let y = batch_norm2d_relu(
        x.as_tensor(),
        w.as_tensor(),
        b.as_tensor(),
        &rm,
        &rv,
        true,
        0.1,
        1e-5,
    )?;
    drop(guard);
    let e = y.sum_all()?.backward().unwrap_err().to_string();
    assert!(e.contains("without the replicas installed"), "{e}");
    Ok(())
}
