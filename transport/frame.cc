#include "transport/frame.h"

#include <string>

namespace cw::transport {

Status AppendFrame(ByteView payload, size_t max_size, Bytes* out, size_t header_size) {
  if (payload.empty()) return Status(StatusCode::kInvalidArgument, "empty frame");
  if (payload.size() > max_size || (header_size == 2 && payload.size() > 0xffff)) {
    return Status(StatusCode::kInvalidArgument, "frame of " + std::to_string(payload.size()) +
                                                    " bytes exceeds the maximum of " +
                                                    std::to_string(max_size));
  }
  const uint32_t n = static_cast<uint32_t>(payload.size());
  if (header_size == 4) {
    out->push_back(static_cast<uint8_t>(n >> 24));
    out->push_back(static_cast<uint8_t>(n >> 16));
  }
  out->push_back(static_cast<uint8_t>(n >> 8));
  out->push_back(static_cast<uint8_t>(n));
  out->insert(out->end(), payload.begin(), payload.end());
  return Status::Ok();
}

FrameDecoder::FrameDecoder(size_t max_size, size_t header_size)
    : max_size_(max_size), header_size_(header_size == 2 ? 2 : 4) {}

Status FrameDecoder::CheckHeader() {
  if (buffered_bytes() < header_size_) return Status::Ok();
  const uint8_t* p = buffer_.data() + pos_;
  uint32_t n = 0;
  for (size_t i = 0; i < header_size_; ++i) n = (n << 8) | p[i];
  if (n == 0) {
    error_ = Status(StatusCode::kMalformed, "zero-length frame");
  } else if (n > max_size_) {
    error_ = Status(StatusCode::kMalformed, "frame of " + std::to_string(n) +
                                                " bytes exceeds the maximum of " + std::to_string(max_size_));
  }
  return error_;
}

Status FrameDecoder::Append(ByteView chunk) {
  if (!error_.ok()) return error_;
  // Compact: drop the frames already returned, so the buffer holds at most one partial frame plus a chunk.
  if (pos_ > 0 && (pos_ == buffer_.size() || pos_ >= buffer_.size() / 2)) {
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(pos_));
    pos_ = 0;
  }
  buffer_.insert(buffer_.end(), chunk.begin(), chunk.end());
  return CheckHeader();
}

Result<std::optional<ByteView>> FrameDecoder::Next() {
  CW_ASSIGN_OR_RETURN(std::optional<std::span<uint8_t>> frame, NextMutable());
  if (!frame) return std::optional<ByteView>();
  return std::optional<ByteView>(*frame);
}

Result<std::optional<std::span<uint8_t>>> FrameDecoder::NextMutable() {
  if (!error_.ok()) return Error(error_);
  if (buffered_bytes() < header_size_) return std::optional<std::span<uint8_t>>();
  CW_RETURN_IF_ERROR(CheckHeader());
  uint8_t* p = buffer_.data() + pos_;
  uint32_t n = 0;
  for (size_t i = 0; i < header_size_; ++i) n = (n << 8) | p[i];
  if (buffered_bytes() < header_size_ + n) return std::optional<std::span<uint8_t>>();
  std::span<uint8_t> frame(p + header_size_, n);
  pos_ += header_size_ + n;
  return std::optional<std::span<uint8_t>>(frame);
}

}  // namespace cw::transport
