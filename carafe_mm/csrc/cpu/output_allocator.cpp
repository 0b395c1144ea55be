// See output_allocator.h.
#include "output_allocator.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace carafe_mm {
namespace {

constexpr size_t kHugePage = size_t(2) << 20;

class OutputAllocator final : public c10::Allocator {
 public:
  static OutputAllocator& get() {
    // Never destroyed: tensors may be freed during interpreter shutdown.
    static OutputAllocator* instance = new OutputAllocator();
    return *instance;
  }

  c10::DataPtr allocate(size_t nbytes) override {
    if (nbytes < kHugePage) {
      void* data = aligned(64, std::max<size_t>(nbytes, 64));
      return {data, data, &free_small, c10::Device(c10::DeviceType::CPU)};
    }
    const size_t size = (nbytes + kHugePage - 1) / kHugePage * kHugePage;
    void* data = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = cached_.find(size);
      if (it != cached_.end()) {
        data = it->second;
        cached_.erase(it);
        cached_bytes_ -= size;
      }
    }
    if (data == nullptr) {
      data = aligned(kHugePage, size);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      madvise(data, size, MADV_HUGEPAGE);
#endif
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      live_[data] = size;
    }
    return {data, data, &free_large, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }

  void copy_data(void* dest, const void* src,
                 std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  OutputAllocator() {
    const char* env = std::getenv("CARAFE_MM_CPU_CACHE_MB");
    limit_ = (env != nullptr ? std::strtoull(env, nullptr, 10) : 1024)
             << 20;
  }

  static void* aligned(size_t alignment, size_t size) {
    void* data = nullptr;
    TORCH_CHECK(posix_memalign(&data, alignment, size) == 0,
                "carafe: out of memory allocating ", size, " bytes");
    return data;
  }

  static void free_small(void* data) { std::free(data); }

  static void free_large(void* data) {
    OutputAllocator& self = get();
    std::lock_guard<std::mutex> lock(self.mutex_);
    auto it = self.live_.find(data);
    const size_t size = it->second;
    self.live_.erase(it);
    if (self.cached_bytes_ + size <= self.limit_) {
      self.cached_.emplace(size, data);
      self.cached_bytes_ += size;
    } else {
      std::free(data);
    }
  }

  std::mutex mutex_;
  std::unordered_map<void*, size_t> live_;
  std::multimap<size_t, void*> cached_;
  size_t cached_bytes_ = 0;
  size_t limit_ = 0;
};

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::Tensor& like) {
  return at::detail::empty_generic(
      sizes, &OutputAllocator::get(),
      c10::DispatchKeySet(c10::DispatchKey::CPU), like.scalar_type(),
      c10::MemoryFormat::Contiguous);
}

}  // namespace carafe_mm
