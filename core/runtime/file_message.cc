#include "core/runtime/file_message.h"

#include <sodium.h>

namespace cw::runtime {

namespace {

std::string Reference(const SecretBytes& encoded) {
  std::string ref(kAttachmentReferencePrefix);
  ref += ToHex(encoded.reveal());
  return ref;
}

}  // namespace

Result<FileRow> FileRowFromDescriptor(wire::AttachmentDescriptor descriptor) {
  CW_ASSIGN_OR_RETURN(SecretBytes encoded, wire::EncodeAttachment(descriptor));
  FileRow row;
  row.body = SecretBytes(AsBytes(descriptor.file_name));
  row.attachments.push_back(Reference(encoded));
  row.descriptor = std::move(descriptor);
  return row;
}

Result<FileRow> FileRowFromPayload(const SecretBytes& payload) {
  CW_ASSIGN_OR_RETURN(wire::AttachmentDescriptor d, wire::DecodeAttachment(payload.reveal()));
  FileRow row;
  row.body = SecretBytes(AsBytes(d.file_name));
  row.attachments.push_back(Reference(payload));
  row.descriptor = std::move(d);
  return row;
}

Result<wire::AttachmentDescriptor> DescriptorFromReferences(const std::vector<std::string>& attachments) {
  for (const auto& ref : attachments) {
    if (!std::string_view(ref).starts_with(kAttachmentReferencePrefix)) continue;
    Bytes raw;
    if (!FromHex(std::string_view(ref).substr(kAttachmentReferencePrefix.size()), &raw)) {
      return Error(StatusCode::kMalformed, "attachment reference is not hex");
    }
    SecretBytes encoded(raw);
    sodium_memzero(raw.data(), raw.size());
    return wire::DecodeAttachment(encoded.reveal());
  }
  return Error(StatusCode::kNotFound, "this message has no attachment");
}

}  // namespace cw::runtime
