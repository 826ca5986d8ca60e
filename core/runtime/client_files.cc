// Client::SendFile and Client::FetchAttachment: attachments (core/runtime/attachment.h) over the client's
// relay link. Kept apart from client.cc, which they reach only through RelayBlobs,
// CheckOutgoingPurpose and SendFileMessage.
#include <algorithm>

#include "core/runtime/client.h"
#include "core/runtime/file_message.h"

namespace cw::runtime {

namespace {

// A transfer made from a caller's thread: a dropped link is retried with the default backoff (50 ms
// doubling to 2 s), up to kDefaultTransferRetries times in a row, which outlasts a relay restart.
TransferOptions Transfer(ProgressFn progress) {
  TransferOptions o;
  o.progress = std::move(progress);
  return o;
}

}  // namespace

Result<uint64_t> Client::SendFile(const std::string& contact, const std::string& path, ProgressFn progress,
                                  int64_t timeout_ms) {
  return SendFile(contact, path, std::string(kDefaultPurpose), std::move(progress), timeout_ms);
}

Result<uint64_t> Client::SendFile(const std::string& contact, const std::string& path, const std::string& purpose,
                                  ProgressFn progress, int64_t timeout_ms) {
  // Refuse before uploading what could not be sent anyway: a file refused afterwards would have put a blob
  // at the relay (ciphertext, but bytes the patient did not consent to have sent) for nothing.
  CW_ASSIGN_OR_RETURN(auto contacts, Contacts());
  auto it =
      std::find_if(contacts.begin(), contacts.end(), [&](const ContactInfo& c) { return c.name == contact; });
  if (it == contacts.end()) return Error(StatusCode::kNotFound, "no such contact");
  if (!it->reachable) return Error(StatusCode::kNoSession, "this contact has not written to us yet");
  if (it->trust == session::TrustState::kChanged) {
    return Error(StatusCode::kUntrustedIdentity, "the contact's identity changed: accept it before sending");
  }
  CW_RETURN_IF_ERROR(CheckOutgoingPurpose(contact, purpose));
  UploadOptions options;
  options.transfer = Transfer(std::move(progress));
  auto blobs = RelayBlobs(timeout_ms);
  if (!blobs) return Error(StatusCode::kPermissionDenied, "a blocking client call from a client callback");
  CW_ASSIGN_OR_RETURN(wire::AttachmentDescriptor d, UploadAttachment(*blobs, path, options));
  return SendFileMessage(contact, std::move(d), purpose);
}

Status Client::FetchAttachment(const wire::AttachmentDescriptor& attachment, const std::string& dest_path,
                               ProgressFn progress, int64_t timeout_ms) {
  auto blobs = RelayBlobs(timeout_ms);
  if (!blobs) return Status(StatusCode::kPermissionDenied, "a blocking client call from a client callback");
  return DownloadAttachment(*blobs, attachment, dest_path, Transfer(std::move(progress)));
}

Result<wire::AttachmentDescriptor> Client::AttachmentOf(const storage::TranscriptMessage& row) {
  return DescriptorFromReferences(row.attachments);
}

}  // namespace cw::runtime
