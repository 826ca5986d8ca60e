// SecretBytes: key material and plaintext.
//
// Move-only and heap-held, so a move transfers the pointer and leaves no copy behind. The bytes are wiped
// with sodium_memzero when the object is destroyed, assigned over or moved from. There is no operator<<
// and no implicit conversion; the one way to the raw bytes is `reveal()`, easy to grep for. Equality is
// constant-time. Thread rules: a value type; do not share one instance between threads without a lock.
#pragma once

#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <memory>
#include <span>
#include <vector>

#include <sodium.h>

namespace cw {

// An allocator that wipes what it frees: for plaintext buffers that grow (std::vector with it never
// leaves stale copies of earlier, smaller buffers behind).
template <typename T>
struct WipingAllocator {
  using value_type = T;
  WipingAllocator() = default;
  template <typename U>
  WipingAllocator(const WipingAllocator<U>&) {}
  T* allocate(size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, size_t n) {
    sodium_memzero(p, n * sizeof(T));
    std::allocator<T>().deallocate(p, n);
  }
  template <typename U>
  bool operator==(const WipingAllocator<U>&) const { return true; }
};

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(size_t size) { Resize(size); }
  SecretBytes(const uint8_t* data, size_t size) { Append({data, size}); }
  explicit SecretBytes(std::span<const uint8_t> data) { Append(data); }

  SecretBytes(SecretBytes&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        capacity_(std::exchange(other.capacity_, 0)) {}
  SecretBytes& operator=(SecretBytes&& other) noexcept {
    if (this != &other) {
      Release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      capacity_ = std::exchange(other.capacity_, 0);
    }
    return *this;
  }
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes() { Release(); }

  // An explicit copy, for the rare place that must keep two (a store handing out a record).
  SecretBytes Clone() const { return SecretBytes(data_, size_); }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  // The raw bytes. Every use of a secret's bytes goes through here.
  std::span<const uint8_t> reveal() const { return {data_, size_}; }
  std::span<uint8_t> reveal_mutable() { return {data_, size_}; }

  // Growing zero-fills the new bytes; shrinking wipes the dropped ones.
  void Resize(size_t size) {
    if (size > capacity_) Reserve(size);
    if (size > size_) {
      std::memset(data_ + size_, 0, size - size_);
    } else if (size < size_) {
      sodium_memzero(data_ + size, size_ - size);
    }
    size_ = size;
  }
  void Append(std::span<const uint8_t> data) {
    if (data.empty()) return;
    if (size_ + data.size() > capacity_) Reserve(std::max(size_ + data.size(), capacity_ * 2));
    std::memcpy(data_ + size_, data.data(), data.size());
    size_ += data.size();
  }

  // Constant-time in the length of the shorter input; different lengths compare unequal.
  bool Equals(const SecretBytes& other) const;

 private:
  // Moves to a larger buffer and wipes the old one, so growth leaves no stale copy behind.
  void Reserve(size_t capacity) {
    auto* fresh = new uint8_t[capacity];
    const size_t size = size_;
    if (size > 0) std::memcpy(fresh, data_, size);
    Release();
    data_ = fresh;
    size_ = size;
    capacity_ = capacity;
  }
  void Release() {
    if (data_) {
      sodium_memzero(data_, capacity_);
      delete[] data_;
    }
    data_ = nullptr;
    capacity_ = 0;
    size_ = 0;
  }

  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// Constant-time comparison of two byte strings of possibly different length (length is not secret).
bool ConstantTimeEquals(std::span<const uint8_t> a, std::span<const uint8_t> b);

}  // namespace cw
