// A StoreCore that keeps everything in its index and writes nothing anywhere (as the in-memory store), for
// tests that take over one part of a store: its durability, or the disk it reports.
#pragma once

#include <functional>
#include <span>

#include "relay/store_core.h"

namespace cw::relay::testing {

class IndexOnlyStore : public internal::StoreCore {
 protected:
  bool KeepsBodies() const override { return true; }
  Status Health() const override { return Status::Ok(); }
  void RecordMailbox(const MailboxId&, const internal::MailboxState&) override {}
  void RecordToken(const MailboxId&, const TokenHash&, bool, int64_t) override {}
  void RecordMessage(const MailboxId&, const internal::MessageEntry&, ByteView) override {}
  void RecordMessageRemoved(const MailboxId&, const internal::MessageEntry&) override {}
  void RecordPreKeys(const MailboxId&, const internal::PreKeyState&,
                     std::span<const wire::OneTimePreKeyPublic>) override {}
  void RecordOneTimeRemoved(const MailboxId&, uint32_t) override {}
  void RecordAttachment(const AttachmentId&, const internal::AttachmentState&) override {}
  Status RecordAttachmentChunk(const AttachmentId&, uint64_t, ByteView) override { return Status::Ok(); }
  void RecordAttachmentRemoved(const AttachmentId&, const internal::AttachmentState&) override {}
  uint64_t Ticket() override { return 0; }
  Status WaitDurable(uint64_t) override { return Status::Ok(); }
  void WhenDurable(uint64_t, std::function<void(Status)> fn) override { fn(Status::Ok()); }
  uint64_t SyncCount() const override { return 0; }
};

}  // namespace cw::relay::testing
