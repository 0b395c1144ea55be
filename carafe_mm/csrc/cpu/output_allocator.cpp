// See output_allocator.h. Also registers carafe_mm::empty_cache and
// carafe_mm::cpu_cache_info (wrapped by carafe_mm.ops.empty_cache and
// carafe_mm.ops.cpu_cache_info).
#include "output_allocator.h"

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <torch/library.h>

#include <cerrno>
#include <cstdlib>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace carafe_mm {
namespace {

constexpr size_t kHugePage = size_t(2) << 20;
constexpr const char* kCacheEnv = "CARAFE_MM_CPU_CACHE_MB";

// The cache limit in bytes from CARAFE_MM_CPU_CACHE_MB, or -1 (and `error`
// set) when its value is not a whole number of MiB in [0, kMaxCacheMiB].
int64_t parse_cache_limit(std::string* error) {
  const char* env = std::getenv(kCacheEnv);
  if (env == nullptr) return kDefaultCacheMiB << 20;
  const std::string text(env);
  char* end = nullptr;
  errno = 0;
  const long long mib = std::strtoll(text.c_str(), &end, 10);
  const bool whole = !text.empty() && end == text.c_str() + text.size() &&
                     errno == 0 &&
                     text.find_first_not_of("0123456789") == std::string::npos;
  if (!whole || mib < 0 || mib > kMaxCacheMiB) {
    *error = std::string("carafe: ") + kCacheEnv +
             " must be a whole number of MiB from 0 (no cache) to " +
             std::to_string(kMaxCacheMiB) + ", but got '" + text + "'";
    return -1;
  }
  return static_cast<int64_t>(mib) << 20;
}

class OutputAllocator final : public c10::Allocator {
 public:
  static OutputAllocator& get() {
    // Never destroyed: tensors may be freed during interpreter shutdown.
    static OutputAllocator* instance = new OutputAllocator();
    return *instance;
  }

  // Whether an output of `nbytes` comes from this allocator; raises the
  // ValueError of a bad CARAFE_MM_CPU_CACHE_MB.
  bool serves(size_t nbytes) const {
    TORCH_CHECK_VALUE(limit_ >= 0, error_);
    return nbytes >= kHugePage && limit_ > 0;
  }

  c10::DataPtr allocate(size_t nbytes) override {
    const size_t size = (nbytes + kHugePage - 1) / kHugePage * kHugePage;
    void* data = take_cached(size);
    if (data == nullptr) {
      TORCH_CHECK(posix_memalign(&data, kHugePage, size) == 0,
                  "carafe: out of memory allocating ", size, " bytes");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      madvise(data, size, MADV_HUGEPAGE);
#endif
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      live_[data] = size;
    }
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }

  void copy_data(void* dest, const void* src,
                 std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  // Frees every cached block.
  void empty() {
    std::list<Block> cached;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      cached.swap(cached_);
      cached_bytes_ = 0;
    }
    for (const Block& block : cached) std::free(block.data);
  }

  std::vector<int64_t> info() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {static_cast<int64_t>(cached_bytes_), limit_};
  }

 private:
  struct Block {
    size_t size;
    void* data;
  };

  OutputAllocator() : limit_(parse_cache_limit(&error_)) {}

  // The most recently freed cached block of `size` bytes, or nullptr.
  void* take_cached(size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = cached_.rbegin(); it != cached_.rend(); ++it) {
      if (it->size == size) {
        void* data = it->data;
        cached_bytes_ -= size;
        cached_.erase(std::next(it).base());
        return data;
      }
    }
    return nullptr;
  }

  static void release(void* data) {
    OutputAllocator& self = get();
    std::vector<void*> to_free;
    {
      std::lock_guard<std::mutex> lock(self.mutex_);
      auto it = self.live_.find(data);
      const size_t size = it->second;
      self.live_.erase(it);
      if (size > static_cast<size_t>(self.limit_)) {
        to_free.push_back(data);
      } else {
        // Evict the blocks freed longest ago until this one fits.
        while (self.cached_bytes_ + size > static_cast<size_t>(self.limit_)) {
          to_free.push_back(self.cached_.front().data);
          self.cached_bytes_ -= self.cached_.front().size;
          self.cached_.pop_front();
        }
        self.cached_.push_back({size, data});
        self.cached_bytes_ += size;
      }
    }
    for (void* block : to_free) std::free(block);
  }

  std::mutex mutex_;
  std::unordered_map<void*, size_t> live_;
  std::list<Block> cached_;  // oldest first
  size_t cached_bytes_ = 0;
  std::string error_;
  const int64_t limit_;  // bytes; -1: bad CARAFE_MM_CPU_CACHE_MB
};

void empty_cache() { OutputAllocator::get().empty(); }

std::vector<int64_t> cpu_cache_info() { return OutputAllocator::get().info(); }

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::Tensor& like) {
  OutputAllocator& allocator = OutputAllocator::get();
  const size_t nbytes = c10::multiply_integers(sizes) * like.element_size();
  if (!allocator.serves(nbytes)) {
    return at::empty(
        sizes, like.options().memory_format(c10::MemoryFormat::Contiguous));
  }
  return at::detail::empty_generic(
      sizes, &allocator, c10::DispatchKeySet(c10::DispatchKey::CPU),
      like.scalar_type(), c10::MemoryFormat::Contiguous);
}

TORCH_LIBRARY_FRAGMENT(carafe_mm, m) {
  m.def("empty_cache() -> ()", &empty_cache);
  m.def("cpu_cache_info() -> int[]", &cpu_cache_info);
}

}  // namespace carafe_mm
