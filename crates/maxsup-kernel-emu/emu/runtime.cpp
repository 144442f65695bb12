// The host emulation of a CUDA launch: every block of the grid in turn, its threads as fibers
// (ucontext) on one OS thread, switched at __syncthreads and at warp shuffles. Between two
// barriers a thread runs alone, so the kernels see CUDA's guarantees (writes before a barrier
// are visible after it) and nothing more is promised. A barrier that cannot complete (lanes of
// a warp diverging at a shuffle, a __syncthreads not reached by every live thread, a shuffle
// with exited lanes) ends the launch with an error instead of a hang; so do launch sizes the GPU
// would reject. Blocks take turns at four schedules of their threads (see Schedule).
#include "cuda_bf16.h"

#include <stdio.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <vector>

emu_uint3 emu_block_idx, emu_block_dim, emu_grid_dim;

namespace {

enum State { RUNNABLE, AT_BLOCK_BARRIER, AT_SHUFFLE, DONE };

struct Thread {
  emu_uint3 idx;
  ucontext_t ctx;
  State state;
  uint64_t shfl_in, shfl_out;
  int shfl_mask;
};

struct Launch {
  std::vector<Thread> threads;
  ucontext_t scheduler;
  Thread* current;
  void (*body)(void*);
  void* body_ctx;
  // Dynamic shared memory, 128-byte aligned (as the GPU's is, beyond the 32 bytes wmma needs).
  struct alignas(128) Line { unsigned char bytes[128]; };
  std::vector<Line> shared;
};

Launch* active = nullptr;  // the launch in progress; launches are serialised by `launch_lock`
std::mutex launch_lock;

constexpr size_t kStack = 256 * 1024;

void fiber_entry() {
  active->body(active->body_ctx);
  active->current->state = DONE;  // returns to uc_link, the scheduler
}

void yield_to_scheduler() { swapcontext(&active->current->ctx, &active->scheduler); }

// The schedules a block's threads run under, all legal on a GPU; blocks take them in turn, so
// a missing barrier shows up whichever side of it the reader is:
// all threads to their next barrier in index order, or in reverse order; or each warp alone
// through its shuffles up to a __syncthreads (or its exit) before the next warp starts,
// warps in ascending or descending order.
enum Schedule { FORWARD, REVERSE, WARP_SERIAL_UP, WARP_SERIAL_DOWN, SCHEDULES };

void run_thread(Launch& L, Thread& t) {
  L.current = &t;
  swapcontext(&L.scheduler, &t.ctx);
}

// Completes warp `w`'s shuffle when all its lanes wait at it: true when released; `err` says
// why a waiting shuffle can never complete (checked once nothing in the block can run).
bool release_warp(Launch& L, size_t w, bool stuck, std::string& err) {
  size_t n = L.threads.size();
  size_t lo = w * 32, hi = std::min(n, lo + 32), shuffling = 0;
  for (size_t i = lo; i < hi; ++i) shuffling += L.threads[i].state == AT_SHUFFLE;
  if (shuffling == 0) return false;
  char where[160];
  snprintf(where, sizeof where, "block (%u, %u, %u), warp %zu: ", emu_block_idx.x, emu_block_idx.y, emu_block_idx.z, w);
  if (hi - lo != 32) {
    err = std::string(where) + "a full-mask shuffle in a warp of " + std::to_string(hi - lo) + " threads";
    return false;
  }
  if (shuffling != 32) {
    if (stuck) {
      err = std::string(where) + std::to_string(shuffling) +
            " lanes wait at a full-mask shuffle the other lanes left (exited or at __syncthreads)";
    }
    return false;
  }
  int mask = L.threads[lo].shfl_mask;
  for (size_t i = lo; i < hi; ++i) {
    if (L.threads[i].shfl_mask != mask) {
      err = std::string(where) + "lanes shuffle with different offsets (divergent shuffles)";
      return false;
    }
  }
  for (size_t i = lo; i < hi; ++i) L.threads[i].shfl_out = L.threads[lo + (((i - lo) ^ (size_t)mask) & 31)].shfl_in;
  for (size_t i = lo; i < hi; ++i) L.threads[i].state = RUNNABLE;
  return true;
}

// Runs one block to completion; an empty string, or why it could not complete.
std::string run_block(Launch& L, char* stacks, size_t page, Schedule schedule) {
  size_t n = L.threads.size(), warps = (n + 31) / 32;
  unsigned bx = emu_block_dim.x, by = emu_block_dim.y;
  for (size_t i = 0; i < n; ++i) {
    Thread& t = L.threads[i];
    t.idx = {(unsigned)(i % bx), (unsigned)((i / bx) % by), (unsigned)(i / ((size_t)bx * by))};
    t.state = RUNNABLE;
    getcontext(&t.ctx);
    t.ctx.uc_stack.ss_sp = stacks + i * kStack + page;
    t.ctx.uc_stack.ss_size = kStack - page;
    t.ctx.uc_link = &L.scheduler;
    makecontext(&t.ctx, fiber_entry, 0);
  }
  std::string err;
  for (;;) {
    if (schedule == FORWARD || schedule == REVERSE) {
      for (size_t k = 0; k < n; ++k) {
        Thread& t = L.threads[schedule == REVERSE ? n - 1 - k : k];
        if (t.state == RUNNABLE) run_thread(L, t);
      }
    } else {
      for (size_t k = 0; k < warps; ++k) {
        size_t w = schedule == WARP_SERIAL_DOWN ? warps - 1 - k : k;
        do {
          for (size_t i = w * 32; i < std::min(n, w * 32 + 32); ++i)
            if (L.threads[i].state == RUNNABLE) run_thread(L, L.threads[i]);
        } while (release_warp(L, w, false, err));
        if (!err.empty()) return err;
      }
    }
    // Every thread now waits at a barrier or has exited.
    bool released = false;
    for (size_t w = 0; w < warps; ++w) released |= release_warp(L, w, false, err);
    if (!err.empty()) return err;
    if (released) continue;
    size_t done = 0, at_block = 0;
    for (auto& t : L.threads) {
      done += t.state == DONE;
      at_block += t.state == AT_BLOCK_BARRIER;
    }
    if (done == n) return "";
    if (at_block == n) {
      for (auto& t : L.threads) t.state = RUNNABLE;
      continue;
    }
    char msg[200];
    if (at_block == n - done) {
      // CUDA leaves a barrier not reached by every thread of the block undefined.
      snprintf(msg, sizeof msg, "block (%u, %u, %u): deadlock, %zu threads exited before a __syncthreads %zu others wait at",
               emu_block_idx.x, emu_block_idx.y, emu_block_idx.z, done, at_block);
      return msg;
    }
    for (size_t w = 0; w < warps && err.empty(); ++w) release_warp(L, w, true, err);
    if (!err.empty()) return err;
    snprintf(msg, sizeof msg, "block (%u, %u, %u): deadlock, %zu threads at __syncthreads, %zu exited, the rest at shuffles",
             emu_block_idx.x, emu_block_idx.y, emu_block_idx.z, at_block, done);
    return msg;
  }
}

std::string launch(const uint32_t grid[3], const uint32_t block[3], uint32_t shared_bytes, uint32_t shared_limit,
                   void (*body)(void*), void* ctx) {
  size_t n = (size_t)block[0] * block[1] * block[2];
  if (n == 0 || n > 1024 || block[2] > 64) return "invalid block size (the GPU allows at most 1024 threads, z <= 64)";
  if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[0] > 0x7fffffffu || grid[1] > 65535 || grid[2] > 65535)
    return "invalid grid size (x in 1..2^31-1, y and z in 1..65535)";
  if (shared_bytes > shared_limit) {
    return "more dynamic shared memory (" + std::to_string(shared_bytes) + " bytes) than the launch may use (" +
           std::to_string(shared_limit) + "; above 48 KiB a kernel needs the opt-in attribute)";
  }
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  char* stacks = (char*)mmap(nullptr, n * kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (stacks == MAP_FAILED) return "cannot map the fiber stacks";
  for (size_t i = 0; i < n; ++i) mprotect(stacks + i * kStack, page, PROT_NONE);  // overflow faults
  Launch L;
  L.threads.resize(n);
  L.body = body;
  L.body_ctx = ctx;
  L.shared.assign((shared_bytes + 127) / 128, Launch::Line{});
  active = &L;
  emu_grid_dim = {grid[0], grid[1], grid[2]};
  emu_block_dim = {block[0], block[1], block[2]};
  std::string err;
  size_t linear = 0;
  for (uint32_t z = 0; z < grid[2] && err.empty(); ++z)
    for (uint32_t y = 0; y < grid[1] && err.empty(); ++y)
      for (uint32_t x = 0; x < grid[0] && err.empty(); ++x) {
        emu_block_idx = {x, y, z};
        // Fresh shared memory per block holds garbage on a GPU: poison it with NaN bytes.
        memset(L.shared.data(), 0xff, L.shared.size() * sizeof(Launch::Line));
        err = run_block(L, stacks, page, (Schedule)(linear++ % SCHEDULES));
      }
  active = nullptr;
  munmap(stacks, n * kStack);
  return err;
}

}  // namespace

extern "C" const emu_uint3* emu_thread_idx() { return &active->current->idx; }

extern "C" void emu_syncthreads() {
  active->current->state = AT_BLOCK_BARRIER;
  yield_to_scheduler();
}

extern "C" uint64_t emu_shfl_xor(uint64_t bits, int lane_mask) {
  Thread* t = active->current;
  t->shfl_in = bits;
  t->shfl_mask = lane_mask;
  t->state = AT_SHUFFLE;
  yield_to_scheduler();
  return t->shfl_out;
}

extern "C" void* emu_dynamic_shared() { return active->shared.data(); }

// Runs `body(ctx)` once per thread of the launch; 0, or 1 with the reason in `err`.
// `shared_limit`: the most dynamic shared memory the launch may use (48 KiB, or what the
// kernel's opt-in attribute allows).
extern "C" int emu_launch(const uint32_t grid[3], const uint32_t block[3], uint32_t shared_bytes,
                          uint32_t shared_limit, void (*body)(void*), void* ctx, char* err, size_t err_cap) {
  std::lock_guard<std::mutex> guard(launch_lock);
  std::string e = launch(grid, block, shared_bytes, shared_limit, body, ctx);
  if (e.empty()) return 0;
  snprintf(err, err_cap, "%s", e.c_str());
  return 1;
}
