#include "core/runtime/file_message.h"

namespace cw::runtime {

namespace {

// kAttachmentReferencePrefix || hex(encoded descriptor), built in wiped memory throughout.
SecretBytes Reference(const SecretBytes& encoded) {
  SecretBytes ref(kAttachmentReferencePrefix.size() + 2 * encoded.size());
  auto out = ref.reveal_mutable();
  std::copy(kAttachmentReferencePrefix.begin(), kAttachmentReferencePrefix.end(), out.begin());
  ToHexInto(encoded.reveal(), out.subspan(kAttachmentReferencePrefix.size()));
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

Result<wire::AttachmentDescriptor> DescriptorFromReferences(const std::vector<SecretBytes>& attachments) {
  for (const auto& ref : attachments) {
    const std::string_view text = AsText(ref.reveal());
    if (!text.starts_with(kAttachmentReferencePrefix)) continue;
    const std::string_view hex = text.substr(kAttachmentReferencePrefix.size());
    SecretBytes encoded(hex.size() / 2);
    if (hex.size() % 2 != 0 || !FromHexInto(hex, encoded.reveal_mutable())) {
      return Error(StatusCode::kMalformed, "attachment reference is not hex");
    }
    return wire::DecodeAttachment(encoded.reveal());
  }
  return Error(StatusCode::kNotFound, "this message has no attachment");
}

}  // namespace cw::runtime
