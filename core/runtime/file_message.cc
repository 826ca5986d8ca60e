#include "core/runtime/file_message.h"

#include <sodium.h>

namespace cw::runtime {

namespace {

// kAttachmentReferencePrefix || hex(encoded descriptor), built in wiped memory throughout.
SecretBytes Reference(const SecretBytes& encoded) {
  SecretBytes ref(kAttachmentReferencePrefix.size() + 2 * encoded.size());
  auto out = ref.reveal_mutable();
  std::copy(kAttachmentReferencePrefix.begin(), kAttachmentReferencePrefix.end(), out.begin());
  static constexpr char kDigits[] = "0123456789abcdef";
  size_t at = kAttachmentReferencePrefix.size();
  for (uint8_t b : encoded.reveal()) {  // by hand: sodium_bin2hex would also write a NUL past the end
    out[at++] = static_cast<uint8_t>(kDigits[b >> 4]);
    out[at++] = static_cast<uint8_t>(kDigits[b & 0xf]);
  }
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
    size_t len = 0;
    if (hex.size() % 2 != 0 ||
        sodium_hex2bin(encoded.reveal_mutable().data(), encoded.size(), hex.data(), hex.size(), nullptr, &len,
                       nullptr) != 0 ||
        len != encoded.size()) {
      return Error(StatusCode::kMalformed, "attachment reference is not hex");
    }
    return wire::DecodeAttachment(encoded.reveal());
  }
  return Error(StatusCode::kNotFound, "this message has no attachment");
}

}  // namespace cw::runtime
