// Facts established about the contents of tensors (indices checked to lie in
// [0, K), a weight's structure validated and its finiteness scanned), kept
// until the tensors change, so the CUDA glue does not repeat a check (and its
// host synchronisation) on every call.
//
// An entry names its tensors by storage (held through a weak reference, so
// the storage object cannot be freed and its address reused while the entry
// exists), data pointer, number of elements and version counter (bumped by
// every in-place write through torch). A write that bypasses the version
// counter (through `.data`, or raw pointers) is not seen: the kernels must
// stay in bounds on any content, and they do (indices are bound-checked).
// Inference tensors have no version counter and are never cached.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Storage.h>
#include <c10/util/intrusive_ptr.h>

#include <cstdint>
#include <deque>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <vector>

namespace mamext::cuda {

template <typename Value>
class ContentCache {
 public:
  explicit ContentCache(size_t capacity) : capacity_(capacity) {}

  // The value stored for exactly these tensors (same order) and tag, if none
  // of them changed since.
  std::optional<Value> find(std::initializer_list<at::Tensor> tensors, int64_t tag) {
    std::vector<Ident> ids;
    if (!identify(tensors, ids)) return std::nullopt;
    std::lock_guard<std::mutex> lock(mu_);
    for (const Entry& e : entries_)
      if (e.tag == tag && same(e.ids, ids)) return e.value;
    return std::nullopt;
  }

  // Records `value` for the tensors' current contents (no-op for inference
  // tensors); drops entries whose storage is gone, then the oldest beyond the
  // capacity.
  void insert(std::initializer_list<at::Tensor> tensors, int64_t tag, Value value) {
    std::vector<Ident> ids;
    if (!identify(tensors, ids)) return;
    std::lock_guard<std::mutex> lock(mu_);
    std::erase_if(entries_, [&](const Entry& e) { return expired(e.ids) || (e.tag == tag && same(e.ids, ids)); });
    entries_.push_back(Entry{std::move(ids), tag, std::move(value)});
    while (entries_.size() > capacity_) entries_.pop_front();
  }

 private:
  struct Ident {
    c10::weak_intrusive_ptr<c10::StorageImpl> storage;
    const void* data;
    int64_t numel;
    int64_t version;
  };
  struct Entry {
    std::vector<Ident> ids;
    int64_t tag;
    Value value;
  };

  static bool identify(std::initializer_list<at::Tensor> tensors, std::vector<Ident>& ids) {
    for (const at::Tensor& t : tensors) {
      if (!t.defined() || t.is_inference() || !t.has_storage()) return false;
      ids.push_back(Ident{t.storage().getWeakStorageImpl(), t.const_data_ptr(), t.numel(), t._version()});
    }
    return true;
  }
  static bool same(const std::vector<Ident>& a, const std::vector<Ident>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i].data != b[i].data || a[i].numel != b[i].numel || a[i].version != b[i].version) return false;
      if (a[i].storage.expired() || a[i].storage._unsafe_get_target() != b[i].storage._unsafe_get_target())
        return false;
    }
    return true;
  }
  static bool expired(const std::vector<Ident>& ids) {
    for (const Ident& i : ids)
      if (i.storage.expired()) return true;
    return false;
  }

  std::mutex mu_;
  std::deque<Entry> entries_;
  const size_t capacity_;
};

}  // namespace mamext::cuda
