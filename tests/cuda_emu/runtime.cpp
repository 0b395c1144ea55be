// The runtime of the CUDA emulation (see README.md beside this file): device
// memory, the block scheduler, the memory-access hooks and the traffic log.
//
// Device memory is one reserved address range. Every allocation gets its own
// pages, poison-filled (0xff bytes: NaN in every floating type) and followed
// by an inaccessible guard page; freed pages become inaccessible and are never
// handed out again. The emulated sources are compiled with GCC's address
// sanitizer instrumentation calling the __asan_* hooks below for every load
// and store, so each access of a kernel to device or shared memory is
// checked against the live allocations (an access outside them stops the
// launch with an error naming the kernel, thread and block) and, while
// tracing, logged for the traffic model.
#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>
#include <torch/library.h>
#include <ucontext.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "ATen/cuda/CUDAContext.h"
#include "c10/cuda/CUDAException.h"
#include "cuda_emu.h"
#include "cuda_emu_library.h"

#define NO_ASAN __attribute__((no_sanitize_address))

namespace cuda_emu {

thread_local Builtins builtins;

namespace {

constexpr uintptr_t kPage = 4096;
constexpr uintptr_t kArenaBytes = uintptr_t(1) << 38;  // address space
constexpr size_t kSharedBytes = 232448;                 // 227 KiB, as H100
constexpr size_t kStaticSharedBytes = 48 * 1024;
constexpr size_t kStackBytes = 256 * 1024;
constexpr int kMaxThreads = 1024;
constexpr int kSectorShift = 5;  // 32-byte sectors

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::abort();
}

char* reserve(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) die("cuda_emu: mmap");
  return static_cast<char*>(p);
}

void make_accessible(void* p, size_t bytes) {
  if (mprotect(p, bytes, PROT_READ | PROT_WRITE) != 0) die("cuda_emu: mprotect");
}

// ---------------------------------------------------------------------------
// device memory

struct Range {
  uintptr_t begin, end;
};

struct Arena {
  uintptr_t base = 0, next = 0;
  std::mutex mutex;
  std::vector<Range> live;  // sorted by begin
  uint64_t allocations = 0;
};

Arena& arena() {
  static Arena* a = [] {
    auto* a = new Arena;
    a->base = reinterpret_cast<uintptr_t>(reserve(kArenaBytes));
    a->next = a->base;
    return a;
  }();
  return *a;
}

uintptr_t round_up(uintptr_t x, uintptr_t m) { return (x + m - 1) / m * m; }

void free_device(void* ctx);

class DeviceAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    if (bytes == 0) return {nullptr, nullptr, &free_device, c10::Device(c10::kCPU)};
    Arena& a = arena();
    const uintptr_t pages = round_up(bytes, kPage);
    uintptr_t region;
    {
      std::lock_guard<std::mutex> lock(a.mutex);
      // A guard page before and after; addresses are never reused until the
      // reserved range wraps around.
      if (a.next + pages + 2 * kPage > a.base + kArenaBytes) a.next = a.base;
      region = a.next + kPage;
      a.next += pages + 2 * kPage;
      // The data ends within 64 bytes of the guard page after it, 64-byte
      // aligned as c10's allocator; the hooks see the slack as out of bounds.
      const uintptr_t begin = region + pages - round_up(bytes, 64);
      const Range r{begin, begin + bytes};
      a.live.insert(std::upper_bound(a.live.begin(), a.live.end(), r,
                                     [](const Range& x, const Range& y) {
                                       return x.begin < y.begin;
                                     }),
                    r);
      ++a.allocations;
    }
    make_accessible(reinterpret_cast<void*>(region), pages);
    const uintptr_t begin = region + pages - round_up(bytes, 64);
    std::memset(reinterpret_cast<void*>(region), 0xff, pages);
    void* data = reinterpret_cast<void*>(begin);
    return {data, data, &free_device, c10::Device(c10::kCPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &free_device; }

  void copy_data(void* dest, const void* src, size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

DeviceAllocator device_allocator;
uint64_t live_generation = 0;

void free_device(void* ctx) {
  if (ctx == nullptr) return;
  Arena& a = arena();
  const auto begin = reinterpret_cast<uintptr_t>(ctx);
  uintptr_t end;
  {
    std::lock_guard<std::mutex> lock(a.mutex);
    auto it = std::lower_bound(
        a.live.begin(), a.live.end(), begin,
        [](const Range& x, uintptr_t b) { return x.begin < b; });
    if (it == a.live.end() || it->begin != begin) {
      std::fprintf(stderr, "cuda_emu: free of unknown device pointer %p\n", ctx);
      std::abort();
    }
    end = it->end;
    a.live.erase(it);
    ++live_generation;
  }
  const uintptr_t region = begin / kPage * kPage;
  const uintptr_t bytes = round_up(end, kPage) - region;
  madvise(reinterpret_cast<void*>(region), bytes, MADV_DONTNEED);
  mprotect(reinterpret_cast<void*>(region), bytes, PROT_NONE);
}

// ---------------------------------------------------------------------------
// the traffic model

enum Kind : uint8_t { kGlobalLoad, kGlobalStore, kSharedLoad, kSharedStore };

struct Event {
  uintptr_t pc, addr;
  uint32_t size;
  Kind kind;
};

struct Counts {
  // per Kind: warp-level instructions, 32-byte sectors (global) or
  // 128-byte wavefronts (shared), bytes the lanes asked for
  uint64_t requests[4] = {}, sectors[4] = {}, bytes[4] = {};
  uint64_t unique_load_sectors = 0, unique_store_sectors = 0;
  uint64_t threads = 0, divergent_groups = 0;
  uint64_t warp_collectives = 0;  // shuffles, votes, __syncwarp: per warp
};

// One bit per sector of the arena: which sectors a launch touched.
struct SectorSet {
  uint64_t* bits = nullptr;
  size_t words = (kArenaBytes >> kSectorShift) / 64;
  std::vector<size_t> touched;  // words that are non-zero

  bool insert(uintptr_t offset) {
    if (bits == nullptr) bits = reinterpret_cast<uint64_t*>(reserve_rw());
    const uint64_t s = offset >> kSectorShift;
    uint64_t& w = bits[s / 64];
    const uint64_t bit = uint64_t(1) << (s % 64);
    if (w & bit) return false;
    if (w == 0) touched.push_back(s / 64);
    w |= bit;
    return true;
  }
  void clear() {
    for (size_t i : touched) bits[i] = 0;
    touched.clear();
  }
  static void* reserve_rw() {
    void* p = mmap(nullptr, (kArenaBytes >> kSectorShift) / 8,
                   PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("cuda_emu: mmap");
    return p;
  }
};

// The sectors (or shared-memory wavefronts) one warp-level instruction
// touches; `lanes` holds (addr, size) of each lane that executed it.
void count_instruction(Kind kind, const std::vector<const Event*>& lanes,
                       Counts& counts, SectorSet* loads, SectorSet* stores,
                       uintptr_t arena_base) {
  counts.requests[kind] += 1;
  uint64_t bytes = 0;
  if (kind == kGlobalLoad || kind == kGlobalStore) {
    uintptr_t sectors[64];
    int n = 0;
    for (const Event* e : lanes) {
      bytes += e->size;
      for (uintptr_t s = e->addr >> kSectorShift;
           s <= (e->addr + e->size - 1) >> kSectorShift && n < 64; ++s) {
        sectors[n++] = s;
      }
    }
    std::sort(sectors, sectors + n);
    n = static_cast<int>(std::unique(sectors, sectors + n) - sectors);
    counts.sectors[kind] += n;
    SectorSet* set = kind == kGlobalLoad ? loads : stores;
    uint64_t& unique = kind == kGlobalLoad ? counts.unique_load_sectors
                                           : counts.unique_store_sectors;
    for (int i = 0; i < n; ++i) {
      unique += set->insert((sectors[i] << kSectorShift) - arena_base);
    }
  } else {
    // 32 banks of 4 bytes: the wavefronts are the most distinct words any
    // bank serves, and at least one per 128 bytes.
    uintptr_t words[128];
    int n = 0;
    for (const Event* e : lanes) {
      bytes += e->size;
      for (uintptr_t w = e->addr >> 2; w <= (e->addr + e->size - 1) >> 2 &&
                                       n < 128;
           ++w) {
        words[n++] = w;
      }
    }
    std::sort(words, words + n);
    n = static_cast<int>(std::unique(words, words + n) - words);
    int per_bank[32] = {};
    int worst = 0;
    for (int i = 0; i < n; ++i) worst = std::max(worst, ++per_bank[words[i] % 32]);
    counts.sectors[kind] += std::max<uint64_t>(worst, (4 * n + 127) / 128);
  }
  counts.bytes[kind] += bytes;
}

// Groups the events of a warp's lanes into warp-level instructions: the i-th
// execution of an instruction by one lane goes with the i-th by the others.
// Lanes that agree event by event are paired in one pass; after the first
// disagreement (divergence) the rest is grouped by (pc, occurrence).
void count_warp(std::vector<Event>* lane_events[], int lanes, Counts& counts,
                SectorSet* loads, SectorSet* stores, uintptr_t arena_base) {
  size_t at[32] = {};
  std::vector<const Event*> group;
  group.reserve(32);
  bool diverged = false;
  for (;;) {
    const Event* first = nullptr;
    bool same = true;
    for (int l = 0; l < lanes; ++l) {
      if (at[l] >= lane_events[l]->size()) continue;
      const Event& e = (*lane_events[l])[at[l]];
      if (first == nullptr) {
        first = &e;
      } else if (e.pc != first->pc || e.kind != first->kind) {
        same = false;
        break;
      }
    }
    if (first == nullptr) break;
    if (!same) {
      diverged = true;
      break;
    }
    group.clear();
    for (int l = 0; l < lanes; ++l) {
      if (at[l] < lane_events[l]->size()) group.push_back(&(*lane_events[l])[at[l]++]);
    }
    count_instruction(first->kind, group, counts, loads, stores, arena_base);
  }
  if (diverged) {
    struct Key {
      uintptr_t pc;
      uint64_t occurrence;
      bool operator==(const Key& o) const {
        return pc == o.pc && occurrence == o.occurrence;
      }
    };
    struct Hash {
      size_t operator()(const Key& k) const {
        return std::hash<uintptr_t>()(k.pc * 1000003u + k.occurrence);
      }
    };
    std::unordered_map<Key, std::vector<const Event*>, Hash> groups;
    std::vector<Key> order;
    for (int l = 0; l < lanes; ++l) {
      std::unordered_map<uintptr_t, uint64_t> seen;
      for (size_t i = at[l]; i < lane_events[l]->size(); ++i) {
        const Event& e = (*lane_events[l])[i];
        const Key key{e.pc * 4 + e.kind, seen[e.pc * 4 + e.kind]++};
        auto& g = groups[key];
        if (g.empty()) order.push_back(key);
        g.push_back(&e);
      }
    }
    counts.divergent_groups += order.size();
    for (const Key& key : order) {
      const auto& g = groups[key];
      count_instruction(g.front()->kind, g, counts, loads, stores, arena_base);
    }
  }
  for (int l = 0; l < lanes; ++l) lane_events[l]->clear();
}

struct LaunchRecord {
  std::string name;
  dim3 grid, block;
  size_t shmem;
  Counts counts;
};

// ---------------------------------------------------------------------------
// the scheduler

enum State : uint8_t { kReady, kAtBarrier, kAtWarp, kDone };

struct Fiber {
  ucontext_t context;
  State state;
  unsigned int warp_mask;
  std::vector<Event> events;
};

struct Warp {
  uint64_t pending[32], result[32];
  unsigned int active;
};

struct Device {
  cudaDeviceProp properties{8, 1024, 32, kStaticSharedBytes, kSharedBytes};
  bool tracing = false;
  std::vector<LaunchRecord> log;
  std::string error;  // of the last failed launch, until checked

  char* stacks = nullptr;
  char* shared = nullptr;
  SectorSet loads, stores;
};

Device& device() {
  static Device* d = [] {
    auto* d = new Device;
    // Stacks with a guard page below each, and the shared memory of one
    // block followed by a guard page.
    d->stacks = reserve(kMaxThreads * (kStackBytes + kPage));
    for (int t = 0; t < kMaxThreads; ++t) {
      make_accessible(d->stacks + t * (kStackBytes + kPage) + kPage, kStackBytes);
    }
    d->shared = reserve(kSharedBytes + kPage);
    make_accessible(d->shared, kSharedBytes);
    return d;
  }();
  return *d;
}

// The launch in progress; `in_kernel` is set while a kernel thread runs.
struct Run {
  const char* name;
  dim3 grid, block;
  size_t shmem;
  Body body;
  void* arg;
  int threads = 0;
  Fiber* fibers = nullptr;
  Warp* warps = nullptr;
  int current = 0;
  ucontext_t scheduler;
  size_t shared_used = 0;
  std::vector<std::pair<int, size_t>> shared_sites;
  std::string error;
  Counts* counts = nullptr;
  uintptr_t arena_base = 0, shared_base = 0;
  Range cached{0, 0};
  uint64_t cached_generation = ~uint64_t(0);
};

Run* run = nullptr;
bool in_kernel = false;

std::string where() {
  std::ostringstream out;
  const Builtins& b = builtins;
  out << " in " << run->name << ", thread (" << b.thread_idx.x << ", "
      << b.thread_idx.y << ", " << b.thread_idx.z << ") of block ("
      << b.block_idx.x << ", " << b.block_idx.y << ", " << b.block_idx.z
      << ")";
  return out.str();
}

// Ends the running kernel thread with an error: back to the scheduler, never
// to return.
[[noreturn]] void fail(const std::string& message) {
  in_kernel = false;
  run->error = "cuda_emu: " + message + where();
  Fiber& f = run->fibers[run->current];
  f.state = kDone;
  swapcontext(&f.context, &run->scheduler);
  std::abort();
}

NO_ASAN void fail_access(uintptr_t addr, size_t size, bool store,
                         const char* space) {
  char text[160];
  std::snprintf(text, sizeof(text),
                "out-of-bounds %s of %zu bytes at %p (%s memory)",
                store ? "write" : "read", size, reinterpret_cast<void*>(addr),
                space);
  fail(text);
}

NO_ASAN bool in_live_allocation(uintptr_t addr, size_t size) {
  Run& r = *run;
  if (r.cached_generation == live_generation && addr >= r.cached.begin &&
      addr + size <= r.cached.end) {
    return true;
  }
  Arena& a = arena();
  auto it = std::upper_bound(a.live.begin(), a.live.end(), addr,
                             [](uintptr_t x, const Range& y) { return x < y.begin; });
  if (it == a.live.begin()) return false;
  --it;
  if (addr + size > it->end) return false;
  r.cached = *it;
  r.cached_generation = live_generation;
  return true;
}

NO_ASAN void on_access(void* p, size_t size, bool store, uintptr_t pc) {
  if (!in_kernel) return;
  Run& r = *run;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  Kind kind;
  if (addr - r.arena_base < kArenaBytes) {
    if (!in_live_allocation(addr, size)) fail_access(addr, size, store, "device");
    kind = store ? kGlobalStore : kGlobalLoad;
  } else if (addr - r.shared_base < kSharedBytes + kPage) {
    if (addr + size > r.shared_base + r.shared_used) {
      fail_access(addr, size, store, "shared");
    }
    kind = store ? kSharedStore : kSharedLoad;
  } else {
    return;  // the thread's own stack, its arguments, the builtins
  }
  if (r.counts != nullptr) {
    in_kernel = false;
    r.fibers[r.current].events.push_back(
        {pc, addr, static_cast<uint32_t>(size), kind});
    in_kernel = true;
  }
}

void fiber_main() {
  Run& r = *run;
  r.body(r.arg);
  in_kernel = false;
  r.fibers[r.current].state = kDone;
}

// Back to the scheduler until the fiber is released.
void wait_as(State state) {
  Run& r = *run;
  Fiber& f = r.fibers[r.current];
  f.state = state;
  in_kernel = false;
  swapcontext(&f.context, &r.scheduler);
  in_kernel = true;
}

void set_thread(int t) {
  const dim3& b = run->block;
  builtins.thread_idx = {t % b.x, t / b.x % b.y, t / (b.x * b.y)};
}

// Releases the warps and barriers that every thread concerned reached;
// false when nothing can be released.
bool release(Run& r) {
  bool released = false;
  const int warps = (r.threads + 31) / 32;
  bool any_ready = false;
  for (int w = 0; w < warps; ++w) {
    Fiber* lanes = r.fibers + 32 * w;
    const int n = std::min(32, r.threads - 32 * w);
    unsigned int mask = 0;
    for (int l = 0; l < n; ++l) {
      if (lanes[l].state == kAtWarp) mask = lanes[l].warp_mask;
    }
    if (mask == 0) continue;
    bool complete = true;
    unsigned int active = 0;
    for (int l = 0; l < n; ++l) {
      if (!(mask >> l & 1u)) continue;
      if (lanes[l].state == kAtWarp && lanes[l].warp_mask == mask) {
        active |= 1u << l;
      } else if (lanes[l].state == kDone) {
        r.error = "cuda_emu: lane " + std::to_string(l) +
                  " of a warp collective's mask has exited in " + r.name;
        return false;
      } else {
        complete = false;
      }
    }
    if (!complete) continue;
    Warp& warp = r.warps[w];
    if (r.counts != nullptr) r.counts->warp_collectives += 1;
    std::memcpy(warp.result, warp.pending, sizeof(warp.result));
    warp.active = active;
    for (int l = 0; l < n; ++l) {
      if (active >> l & 1u) lanes[l].state = kReady;
    }
    released = any_ready = true;
  }
  if (any_ready) return true;
  bool all_at_barrier = true, any_at_barrier = false;
  for (int t = 0; t < r.threads; ++t) {
    const State s = r.fibers[t].state;
    if (s == kAtBarrier) any_at_barrier = true;
    if (s != kAtBarrier && s != kDone) all_at_barrier = false;
  }
  if (any_at_barrier && all_at_barrier) {
    for (int t = 0; t < r.threads; ++t) {
      if (r.fibers[t].state == kAtBarrier) r.fibers[t].state = kReady;
    }
    released = true;
  }
  return released;
}

void flush_events(Run& r, Device& d) {
  if (r.counts == nullptr) return;
  const int warps = (r.threads + 31) / 32;
  for (int w = 0; w < warps; ++w) {
    std::vector<Event>* lanes[32];
    const int n = std::min(32, r.threads - 32 * w);
    for (int l = 0; l < n; ++l) lanes[l] = &r.fibers[32 * w + l].events;
    count_warp(lanes, n, *r.counts, &d.loads, &d.stores, r.arena_base);
  }
}

void run_block(Run& r, Device& d) {
  r.shared_sites.clear();
  std::memset(d.shared, 0xff, std::max(r.shared_used, r.shmem));
  r.shared_used = round_up(r.shmem, 16);
  for (int t = 0; t < r.threads; ++t) {
    Fiber& f = r.fibers[t];
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = d.stacks + t * (kStackBytes + kPage) + kPage;
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &r.scheduler;
    makecontext(&f.context, &fiber_main, 0);
    f.state = kReady;
  }
  for (;;) {
    for (int t = 0; t < r.threads; ++t) {
      if (r.fibers[t].state != kReady) continue;
      r.current = t;
      set_thread(t);
      in_kernel = true;
      swapcontext(&r.scheduler, &r.fibers[t].context);
      in_kernel = false;
      if (!r.error.empty()) return;
    }
    flush_events(r, d);
    bool done = true;
    for (int t = 0; t < r.threads; ++t) done &= r.fibers[t].state == kDone;
    if (done) return;
    if (!release(r)) {
      if (r.error.empty()) {
        r.error = std::string("cuda_emu: deadlock in ") + r.name +
                  ": threads wait at __syncthreads() and at a warp "
                  "collective that can never complete";
      }
      return;
    }
  }
}

std::string check_config(dim3 grid, dim3 block, size_t shmem,
                         const cudaDeviceProp& p) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > uint64_t(p.maxThreadsPerBlock) ||
      block.z > 64) {
    return "invalid configuration argument: a block of " +
           std::to_string(block.x) + "x" + std::to_string(block.y) + "x" +
           std::to_string(block.z) + " threads";
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu ||
      grid.y > 65535 || grid.z > 65535) {
    return "invalid configuration argument: a grid of " +
           std::to_string(grid.x) + "x" + std::to_string(grid.y) + "x" +
           std::to_string(grid.z) + " blocks";
  }
  if (shmem > p.sharedMemPerBlock) {
    return "too many resources requested for launch: " +
           std::to_string(shmem) + " bytes of dynamic shared memory";
  }
  return "";
}

}  // namespace

cudaDeviceProp* device_properties() { return &device().properties; }

void run_grid(const char* name, dim3 grid, dim3 block, size_t shmem,
              Body body, void* arg) {
  Device& d = device();
  std::string error = check_config(grid, block, shmem, d.properties);
  if (!error.empty()) {
    if (d.error.empty()) d.error = std::string("cuda_emu: ") + name + ": " + error;
    return;
  }
  if (run != nullptr) {
    d.error = std::string("cuda_emu: ") + name + " launched from a kernel";
    return;
  }
  Run r;
  r.name = name;
  r.grid = grid;
  r.block = block;
  r.shmem = shmem;
  r.body = body;
  r.arg = arg;
  r.threads = static_cast<int>(block.x * block.y * block.z);
  std::vector<Fiber> fibers(r.threads);
  std::vector<Warp> warps((r.threads + 31) / 32);
  r.fibers = fibers.data();
  r.warps = warps.data();
  r.arena_base = arena().base;
  r.shared_base = reinterpret_cast<uintptr_t>(d.shared);
  LaunchRecord record{name, grid, block, shmem, {}};
  if (d.tracing) r.counts = &record.counts;
  record.counts.threads = uint64_t(r.threads) * grid.x * grid.y * grid.z;
  run = &r;
  const Builtins saved = builtins;
  builtins.block_dim = block;
  builtins.grid_dim = grid;
  for (unsigned int z = 0; z < grid.z && r.error.empty(); ++z) {
    for (unsigned int y = 0; y < grid.y && r.error.empty(); ++y) {
      for (unsigned int x = 0; x < grid.x && r.error.empty(); ++x) {
        builtins.block_idx = {x, y, z};
        run_block(r, d);
      }
    }
  }
  builtins = saved;
  run = nullptr;
  if (!r.error.empty() && d.error.empty()) d.error = r.error;
  if (d.tracing) {
    d.loads.clear();
    d.stores.clear();
    d.log.push_back(record);
  }
}

void block_barrier() { wait_as(kAtBarrier); }

unsigned int warp_exchange(unsigned int mask, uint64_t value,
                           const uint64_t** lanes) {
  Run& r = *run;
  const int t = r.current;
  const unsigned int lane = t % 32;
  if (!(mask >> lane & 1u)) {
    fail("a warp collective's mask does not contain the calling lane");
  }
  Warp& warp = r.warps[t / 32];
  warp.pending[lane] = value;
  r.fibers[t].warp_mask = mask;
  wait_as(kAtWarp);
  *lanes = warp.result;
  return warp.active;
}

void* shared_array(int site, size_t bytes, size_t align) {
  Run& r = *run;
  for (const auto& s : r.shared_sites) {
    if (s.first == site) return device().shared + s.second;
  }
  const size_t offset = round_up(r.shared_used, std::max<size_t>(align, 16));
  if (offset + bytes > round_up(r.shmem, 16) + kStaticSharedBytes) {
    fail("more than 48 KiB of static shared memory");
  }
  r.shared_sites.emplace_back(site, offset);
  r.shared_used = offset + bytes;
  return device().shared + offset;
}

void* dynamic_shared(size_t) { return device().shared; }

void check_last_launch() {
  Device& d = device();
  if (d.error.empty()) return;
  const std::string error = d.error;
  d.error.clear();
  TORCH_CHECK(false, error);
}

// ---------------------------------------------------------------------------
// host side

at::Tensor to_device(const at::Tensor& tensor) {
  if (!tensor.defined()) return tensor;
  TORCH_CHECK(tensor.device().is_cpu(), "cuda_emu: expected a CPU tensor, got ",
              tensor.device());
  // The same sizes, strides and storage offset (so the same alignment).
  int64_t extent = 1;
  for (int64_t d = 0; d < tensor.dim(); ++d) {
    if (tensor.size(d) == 0) extent = 0;
  }
  if (extent != 0) {
    for (int64_t d = 0; d < tensor.dim(); ++d) {
      extent += (tensor.size(d) - 1) * tensor.stride(d);
    }
  }
  const int64_t offset = tensor.storage_offset();
  const c10::DispatchKeySet keys(c10::DispatchKey::CPU);
  at::Tensor storage(at::detail::empty_generic(
      {offset + extent}, &device_allocator, keys, tensor.scalar_type(),
      std::nullopt));
  at::Tensor copy = storage.as_strided(tensor.sizes(), tensor.strides(), offset);
  copy.copy_(tensor);
  return copy;
}

at::Tensor to_host(const at::Tensor& tensor) {
  if (!tensor.defined()) return tensor;
  at::Tensor copy = at::empty_strided(tensor.sizes(), tensor.strides(),
                                      tensor.options());
  copy.copy_(tensor);
  return copy;
}

namespace {
c10::Allocator* host_allocator = nullptr;
int scope_depth = 0;
}  // namespace

DeviceScope::DeviceScope() {
  if (scope_depth++ == 0) {
    host_allocator = c10::GetCPUAllocator();
    c10::SetCPUAllocator(&device_allocator, /*priority=*/255);
  }
}

DeviceScope::~DeviceScope() {
  if (--scope_depth == 0) c10::SetCPUAllocator(host_allocator, 255);
}

namespace {

int64_t configure(int64_t sm_count) {
  TORCH_CHECK_VALUE(sm_count >= 1, "cuda_emu: sm_count must be positive");
  cudaDeviceProp& p = device().properties;
  const int64_t previous = p.multiProcessorCount;
  p.multiProcessorCount = static_cast<int>(sm_count);
  return previous;
}

void set_tracing(bool on) {
  Device& d = device();
  d.tracing = on;
}

// The traffic of the launches since the last call, as JSON lines.
std::string pop_log() {
  Device& d = device();
  std::ostringstream out;
  for (const LaunchRecord& l : d.log) {
    const Counts& c = l.counts;
    out << "{\"kernel\": \"" << l.name << "\", \"grid\": [" << l.grid.x << ", "
        << l.grid.y << ", " << l.grid.z << "], \"block\": [" << l.block.x
        << ", " << l.block.y << ", " << l.block.z << "], \"shmem\": " << l.shmem
        << ", \"threads\": " << c.threads;
    const char* names[4] = {"global_load", "global_store", "shared_load",
                            "shared_store"};
    for (int k = 0; k < 4; ++k) {
      out << ", \"" << names[k] << "\": {\"requests\": " << c.requests[k]
          << ", \"" << (k < 2 ? "sectors" : "wavefronts")
          << "\": " << c.sectors[k] << ", \"bytes\": " << c.bytes[k] << "}";
    }
    out << ", \"unique_load_bytes\": " << (c.unique_load_sectors << kSectorShift)
        << ", \"unique_store_bytes\": "
        << (c.unique_store_sectors << kSectorShift)
        << ", \"divergent_groups\": " << c.divergent_groups
        << ", \"warp_collectives\": " << c.warp_collectives << "}\n";
  }
  d.log.clear();
  return out.str();
}

}  // namespace
}  // namespace cuda_emu

// The address-sanitizer hooks that the instrumented code calls.
#define CUDA_EMU_HOOKS(size)                                                \
  extern "C" NO_ASAN void __asan_load##size##_noabort(void* p) {           \
    cuda_emu::on_access(p, size, false,                                     \
                        reinterpret_cast<uintptr_t>(__builtin_return_address(0))); \
  }                                                                         \
  extern "C" NO_ASAN void __asan_store##size##_noabort(void* p) {          \
    cuda_emu::on_access(p, size, true,                                      \
                        reinterpret_cast<uintptr_t>(__builtin_return_address(0))); \
  }
CUDA_EMU_HOOKS(1)
CUDA_EMU_HOOKS(2)
CUDA_EMU_HOOKS(4)
CUDA_EMU_HOOKS(8)
CUDA_EMU_HOOKS(16)

extern "C" NO_ASAN void __asan_loadN_noabort(void* p, size_t size) {
  cuda_emu::on_access(p, size, false,
                      reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
}
extern "C" NO_ASAN void __asan_storeN_noabort(void* p, size_t size) {
  cuda_emu::on_access(p, size, true,
                      reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
}
extern "C" void __asan_init() {}
extern "C" void __asan_version_mismatch_check_v8() {}
extern "C" void __asan_handle_no_return() {}
extern "C" void __asan_before_dynamic_init(const char*) {}
extern "C" void __asan_after_dynamic_init() {}

TORCH_LIBRARY(CUDA_EMU_OPS, m) {
  m.def("configure(int sm_count) -> int", &cuda_emu::configure);
  m.def("trace(bool on) -> ()", &cuda_emu::set_tracing);
  m.def("pop_log() -> str", &cuda_emu::pop_log);
}
