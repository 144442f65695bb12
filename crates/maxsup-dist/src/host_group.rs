//! The processes of a run joined over TCP in a star around rank 0: the rendezvous (every rank
//! checks in with the same run token and configuration, rank 0 answers with its payload, e.g.
//! NCCL's unique id) and host-side collectives over the same sockets.
//!
//! Reductions are summed by rank 0 in rank order and sent back to everyone, so every rank gets
//! the same bits. Every read has a time limit and names the rank it waits for: a rank that
//! exits or crashes closes its socket (an immediate error on the others), a rank that hangs is
//! reported when the limit passes. Nothing here ever waits without a bound.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::world::World;

const MAGIC: &[u8; 8] = b"MAXSUPr1";
/// The largest message accepted (a flat gradient buffer of ~1.5 B parameters).
const MAX_MESSAGE: u64 = 6 << 30;

/// The star of sockets of one run.
pub struct HostGroup {
    rank: usize,
    world_size: usize,
    /// Rank 0: the stream of rank `r` at index `r - 1`. Other ranks: the stream to rank 0.
    peers: Vec<TcpStream>,
    timeout: Duration,
}

/// Values a host reduction can sum.
pub trait Element: Copy + std::ops::AddAssign {
    const BYTES: usize;
    fn write_le(self, out: &mut Vec<u8>);
    fn read_le(bytes: &[u8]) -> Self;
}

impl Element for f32 {
    const BYTES: usize = 4;
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read_le(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl Element for f64 {
    const BYTES: usize = 8;
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn read_le(b: &[u8]) -> Self {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        f64::from_le_bytes(a)
    }
}

impl HostGroup {
    /// Joins the run: rank 0 listens on the world's port and waits for every other rank; the
    /// others connect (retrying while rank 0 starts). `agreement` (e.g. a hash of the training
    /// configuration) must be identical on every rank; `root_payload` is what rank 0 hands to
    /// everyone, returned on every rank. `rendezvous` bounds the whole joining, `timeout` every
    /// later wait for a message.
    pub fn join(
        world: &World,
        agreement: &[u8],
        root_payload: &[u8],
        rendezvous: Duration,
        timeout: Duration,
    ) -> Result<(HostGroup, Vec<u8>)> {
        let mut group = HostGroup {
            rank: world.rank,
            world_size: world.world_size,
            peers: vec![],
            timeout,
        };
        if world.world_size == 1 {
            return Ok((group, root_payload.to_vec()));
        }
        let deadline = Instant::now() + rendezvous;
        let payload = if world.rank == 0 {
            group.accept_peers(world, agreement, root_payload, deadline)?;
            root_payload.to_vec()
        } else {
            group.connect_to_root(world, agreement, deadline)?
        };
        Ok((group, payload))
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    fn hello(world: &World, agreement: &[u8]) -> Vec<u8> {
        let mut m = MAGIC.to_vec();
        m.extend_from_slice(&(world.rank as u64).to_le_bytes());
        m.extend_from_slice(&(world.world_size as u64).to_le_bytes());
        put_bytes(&mut m, world.run_token.as_bytes());
        put_bytes(&mut m, agreement);
        m
    }

    fn accept_peers(
        &mut self,
        world: &World,
        agreement: &[u8],
        payload: &[u8],
        deadline: Instant,
    ) -> Result<()> {
        let listener = TcpListener::bind(("0.0.0.0", world.port)).with_context(|| {
            format!(
                "rank 0 cannot listen on port {} for the other ranks (in use? set MAXSUP_RDZV_PORT)",
                world.port
            )
        })?;
        listener.set_nonblocking(true)?;
        let mut by_rank: Vec<Option<TcpStream>> = (1..world.world_size).map(|_| None).collect();
        while by_rank.iter().any(Option::is_none) {
            match listener.accept() {
                Ok((mut stream, from)) => {
                    stream.set_nonblocking(false)?;
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(remaining(deadline)))?;
                    let hello = read_frame(&mut stream)
                        .with_context(|| format!("reading the rendezvous message of {from}"))?;
                    let rank = match check_hello(&hello, world, agreement) {
                        Ok(r) if by_rank[r - 1].is_some() => {
                            let why = format!("two processes claim rank {r}");
                            let _ = write_frame(&mut stream, &reject(&why));
                            bail!("rendezvous: {why} (the second from {from})");
                        }
                        Ok(r) => r,
                        Err(why) => {
                            let _ = write_frame(&mut stream, &reject(&why));
                            bail!("rendezvous: a process at {from} was refused: {why}");
                        }
                    };
                    by_rank[rank - 1] = Some(stream);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing: Vec<String> = by_rank
                            .iter()
                            .enumerate()
                            .filter(|(_, s)| s.is_none())
                            .map(|(i, _)| (i + 1).to_string())
                            .collect();
                        bail!(
                            "rendezvous: rank(s) {} did not join within the rendezvous time \
                             (MAXSUP_RDZV_TIMEOUT); were they started with the same MASTER_ADDR \
                             and port?",
                            missing.join(", ")
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e).context("rendezvous: accepting a connection"),
            }
        }
        let mut welcome = b"OK".to_vec();
        welcome.extend_from_slice(payload);
        self.peers = by_rank
            .into_iter()
            .map(|s| s.expect("all joined"))
            .collect();
        for r in 1..self.world_size {
            let timeout = self.timeout;
            let s = &mut self.peers[r - 1];
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))?;
            write_frame(s, &welcome).with_context(|| format!("rendezvous: answering rank {r}"))?;
        }
        Ok(())
    }

    fn connect_to_root(
        &mut self,
        world: &World,
        agreement: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>> {
        let target = format!("{}:{}", world.addr, world.port);
        let mut stream = loop {
            let attempt = target
                .to_socket_addrs()
                .with_context(|| format!("rendezvous: cannot resolve {target} (MASTER_ADDR)"))?
                .find_map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok());
            match attempt {
                Some(s) => break s,
                None if Instant::now() >= deadline => bail!(
                    "rendezvous: rank {} cannot reach rank 0 at {target} within the rendezvous \
                     time (MAXSUP_RDZV_TIMEOUT)",
                    world.rank
                ),
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(remaining(deadline)))?;
        write_frame(&mut stream, &Self::hello(world, agreement))
            .context("rendezvous: sending this rank's message to rank 0")?;
        let answer =
            read_frame(&mut stream).map_err(|e| peer_error(e, 0, "the rendezvous answer"))?;
        if let Some(why) = answer.strip_prefix(b"NO".as_slice()) {
            bail!(
                "rendezvous: rank 0 refused rank {}: {}",
                world.rank,
                String::from_utf8_lossy(why)
            );
        }
        let Some(payload) = answer.strip_prefix(b"OK".as_slice()) else {
            bail!("rendezvous: rank 0 answered with a malformed message");
        };
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        self.peers = vec![stream];
        Ok(payload.to_vec())
    }

    /// Sums `values` over all ranks, in rank order; every rank ends with the same result.
    pub fn all_reduce_sum<T: Element>(&mut self, values: &mut [T]) -> Result<()> {
        if self.world_size == 1 {
            return Ok(());
        }
        if self.rank == 0 {
            for r in 1..self.world_size {
                let bytes = self.recv_from(r, "its part of a reduction")?;
                if bytes.len() != values.len() * T::BYTES {
                    bail!(
                        "rank {r} sent {} values to a reduction of {} (the ranks run different \
                         models or configurations)",
                        bytes.len() / T::BYTES,
                        values.len()
                    );
                }
                for (v, b) in values.iter_mut().zip(bytes.chunks_exact(T::BYTES)) {
                    *v += T::read_le(b);
                }
            }
            let out = encode(values);
            for r in 1..self.world_size {
                self.send_to(r, &out)?;
            }
        } else {
            self.send_to(0, &encode(values))?;
            let bytes = self.recv_from(0, "the reduced values")?;
            if bytes.len() != values.len() * T::BYTES {
                bail!(
                    "rank 0 answered a reduction of {} values with {} bytes",
                    values.len(),
                    bytes.len()
                );
            }
            for (v, b) in values.iter_mut().zip(bytes.chunks_exact(T::BYTES)) {
                *v = T::read_le(b);
            }
        }
        Ok(())
    }

    /// Replaces `bytes` on every rank with rank 0's.
    pub fn broadcast(&mut self, bytes: &mut Vec<u8>) -> Result<()> {
        if self.world_size == 1 {
            return Ok(());
        }
        if self.rank == 0 {
            for r in 1..self.world_size {
                self.send_to(r, bytes)?;
            }
        } else {
            *bytes = self.recv_from(0, "a broadcast")?;
        }
        Ok(())
    }

    /// Every rank's `mine`, indexed by rank, on every rank.
    pub fn all_gather(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        if self.world_size == 1 {
            return Ok(vec![mine.to_vec()]);
        }
        let mut all = vec![mine.to_vec()];
        if self.rank == 0 {
            for r in 1..self.world_size {
                all.push(self.recv_from(r, "its part of a gather")?);
            }
            let mut packed = vec![];
            for part in &all {
                put_bytes(&mut packed, part);
            }
            for r in 1..self.world_size {
                self.send_to(r, &packed)?;
            }
            Ok(all)
        } else {
            self.send_to(0, mine)?;
            let packed = self.recv_from(0, "a gather")?;
            let mut parts = vec![];
            let mut at = 0;
            while at < packed.len() {
                parts.push(take_bytes(&packed, &mut at)?.to_vec());
            }
            if parts.len() != self.world_size {
                bail!(
                    "rank 0 sent {} parts of a gather over {} ranks",
                    parts.len(),
                    self.world_size
                );
            }
            Ok(parts)
        }
    }

    /// Returns once every rank has reached it.
    pub fn barrier(&mut self) -> Result<()> {
        self.all_gather(&[]).map(|_| ())
    }

    /// A rank whose socket has closed (its process ended), without waiting: what a wait on
    /// another transport (NCCL) watches so that a dead peer stops it at once. Rank 0 sees every
    /// rank; the others see rank 0 (which ends, and so closes, when any rank fails).
    pub fn closed_peer(&self) -> Option<usize> {
        self.peers.iter().enumerate().find_map(|(i, s)| {
            let r = if self.rank == 0 { i + 1 } else { 0 };
            is_closed(s).then_some(r)
        })
    }

    fn stream(&mut self, r: usize) -> &mut TcpStream {
        if self.rank == 0 {
            &mut self.peers[r - 1]
        } else {
            &mut self.peers[0]
        }
    }

    fn send_to(&mut self, r: usize, bytes: &[u8]) -> Result<()> {
        write_frame(self.stream(r), bytes).map_err(|e| peer_error(e, r, "a message"))
    }

    fn recv_from(&mut self, r: usize, what: &str) -> Result<Vec<u8>> {
        let limit = self.timeout;
        read_frame(self.stream(r)).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => anyhow::anyhow!(
                "no message from rank {r} for {what} within {} s: it is hung or much slower than \
                 this rank (MAXSUP_COLLECTIVE_TIMEOUT sets the limit)",
                limit.as_secs()
            ),
            _ => peer_error(e, r, what),
        })
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10))
}

fn peer_error(e: std::io::Error, r: usize, what: &str) -> anyhow::Error {
    match e.kind() {
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::BrokenPipe
        | ErrorKind::ConnectionAborted => {
            anyhow::anyhow!("rank {r} closed its connection while this rank waited for {what}: it exited or crashed (see its own error)")
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            anyhow::anyhow!("rank {r} did not answer in time while this rank waited for {what}")
        }
        _ => anyhow::Error::new(e).context(format!("talking to rank {r}")),
    }
}

fn check_hello(
    hello: &[u8],
    world: &World,
    agreement: &[u8],
) -> std::result::Result<usize, String> {
    let Some(rest) = hello.strip_prefix(MAGIC.as_slice()) else {
        return Err("not a maxsup-rs rank (wrong protocol; another program on this port?)".into());
    };
    if rest.len() < 16 {
        return Err("a truncated rendezvous message".into());
    }
    let rank = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
    let size = u64::from_le_bytes(rest[8..16].try_into().unwrap()) as usize;
    let mut at = 16;
    let truncated = |_| "a truncated rendezvous message".to_string();
    let token = take_bytes(rest, &mut at).map_err(truncated)?;
    let theirs = take_bytes(rest, &mut at).map_err(truncated)?;
    if size != world.world_size {
        return Err(format!(
            "rank {rank} was started for a world of {size} processes, rank 0 for {}",
            world.world_size
        ));
    }
    if rank == 0 || rank >= world.world_size {
        return Err(format!(
            "rank {rank} is not a rank of a world of {}",
            world.world_size
        ));
    }
    if token != world.run_token.as_bytes() {
        return Err(format!(
            "rank {rank} belongs to another job (run token {:?}, rank 0's {:?})",
            String::from_utf8_lossy(token),
            world.run_token
        ));
    }
    if theirs != agreement {
        return Err(format!(
            "rank {rank} was started with another training configuration than rank 0 (every rank must get the same flags)"
        ));
    }
    Ok(rank)
}

fn reject(why: &str) -> Vec<u8> {
    let mut m = b"NO".to_vec();
    m.extend_from_slice(why.as_bytes());
    m
}

fn encode<T: Element>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * T::BYTES);
    for &v in values {
        v.write_le(&mut out);
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn take_bytes<'a>(buf: &'a [u8], at: &mut usize) -> Result<&'a [u8]> {
    let Some(len) = buf.get(*at..*at + 8) else {
        bail!("a truncated message");
    };
    let len = u64::from_le_bytes(len.try_into().unwrap()) as usize;
    let start = *at + 8;
    let Some(part) = buf.get(start..start + len) else {
        bail!("a truncated message");
    };
    *at = start + len;
    Ok(part)
}

/// Whether the peer of `s` has closed it: a non-blocking peek reads end-of-stream (unread
/// data, or nothing yet, means it is alive).
fn is_closed(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    let closed = match s.peek(&mut byte) {
        Ok(n) => n == 0,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
    };
    let _ = s.set_nonblocking(false);
    closed
}

fn write_frame(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(&(bytes.len() as u64).to_le_bytes())?;
    s.write_all(bytes)?;
    s.flush()
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    s.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > MAX_MESSAGE {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("a message of {len} bytes, more than any collective sends"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn world(rank: usize, size: usize, port: u16) -> World {
        World {
            rank,
            world_size: size,
            local_rank: rank,
            local_world_size: size,
            addr: "127.0.0.1".into(),
            port,
            run_token: "t".into(),
        }
    }

    /// Runs `body` on `n` ranks in threads and returns their results by rank.
    fn on_ranks<T: Send + 'static>(
        n: usize,
        agreement: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
        body: impl Fn(&mut HostGroup) -> Result<T> + Send + Sync + 'static,
    ) -> Vec<Result<T>> {
        let port = free_port();
        let body = std::sync::Arc::new(body);
        let agreement = std::sync::Arc::new(agreement);
        let handles: Vec<_> = (0..n)
            .map(|r| {
                let (body, agreement) = (body.clone(), agreement.clone());
                std::thread::spawn(move || {
                    let (mut g, payload) = HostGroup::join(
                        &world(r, n, port),
                        &agreement(r),
                        b"root-says-hi",
                        Duration::from_secs(10),
                        Duration::from_secs(2),
                    )?;
                    assert_eq!(payload, b"root-says-hi");
                    body(&mut g)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn a_peer_that_ends_is_seen_closed_without_waiting() {
        let results = on_ranks(
            3,
            |_| b"cfg".to_vec(),
            |g| {
                g.barrier()?;
                // Every peer is alive here (all wait in the next barrier), with nothing to read.
                let before = g.closed_peer();
                g.barrier()?;
                if g.rank() != 0 {
                    return Ok((before, None));
                }
                // Rank 2 ends after the barrier, and so does rank 1: rank 0 sees one of them go.
                let deadline = Instant::now() + Duration::from_secs(5);
                while g.closed_peer().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok((before, g.closed_peer()))
            },
        );
        let seen: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(seen[1], (None, None));
        assert_eq!(seen[2], (None, None));
        assert_eq!(seen[0].0, None);
        assert!(
            matches!(seen[0].1, Some(1 | 2)),
            "rank 0 saw {:?}",
            seen[0].1
        );
    }

    #[test]
    fn reductions_are_identical_on_every_rank() {
        let results = on_ranks(
            3,
            |_| b"cfg".to_vec(),
            |g| {
                let r = g.rank() as f32;
                let mut v = vec![r, 1.0, 0.1 * r];
                g.all_reduce_sum(&mut v)?;
                let mut w = vec![r as f64];
                g.all_reduce_sum(&mut w)?;
                let mut b = if g.rank() == 0 {
                    b"zero".to_vec()
                } else {
                    vec![]
                };
                g.broadcast(&mut b)?;
                let all = g.all_gather(&[g.rank() as u8; 2])?;
                g.barrier()?;
                Ok((v, w, b, all))
            },
        );
        let first = results[0].as_ref().unwrap().clone();
        assert_eq!(first.0[..2], [3.0, 3.0]);
        assert_eq!(first.1, [3.0]);
        assert_eq!(first.2, b"zero");
        assert_eq!(first.3, vec![vec![0, 0], vec![1, 1], vec![2, 2]]);
        for r in &results {
            let r = r.as_ref().unwrap();
            assert_eq!(
                r.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                first.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn a_rank_with_another_configuration_is_refused_by_name() {
        let results = on_ranks(
            2,
            |r| {
                if r == 1 {
                    b"other".to_vec()
                } else {
                    b"cfg".to_vec()
                }
            },
            |_| Ok(()),
        );
        let e0 = format!("{:#}", results[0].as_ref().unwrap_err());
        let e1 = format!("{:#}", results[1].as_ref().unwrap_err());
        assert!(
            e0.contains("rank 1 was started with another training configuration"),
            "{e0}"
        );
        assert!(e1.contains("rank 0 refused rank 1"), "{e1}");
    }

    #[test]
    fn a_rank_that_exits_or_hangs_is_named() {
        let results = on_ranks(
            2,
            |_| vec![],
            |g| {
                if g.rank() == 1 {
                    return Ok(()); // leaves: its socket closes
                }
                let mut v = vec![1.0f32];
                g.all_reduce_sum(&mut v)
            },
        );
        let e = format!("{:#}", results[0].as_ref().unwrap_err());
        assert!(e.contains("rank 1 closed its connection"), "{e}");
        let start = Instant::now();
        let results = on_ranks(
            2,
            |_| vec![],
            |g| {
                if g.rank() == 1 {
                    std::thread::sleep(Duration::from_secs(4));
                    return Ok(());
                }
                let mut v = vec![1.0f32];
                g.all_reduce_sum(&mut v)
            },
        );
        let e = format!("{:#}", results[0].as_ref().unwrap_err());
        assert!(
            e.contains("no message from rank 1") && e.contains("within 2 s"),
            "{e}"
        );
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
