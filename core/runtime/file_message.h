// How a kFile app message (core/wire/app_message.h) becomes a transcript row, in both directions.
//
// The row's body is the file name (so history and exports read naturally) and its one attachment reference
// is "cw-attachment:1:" followed by the hex of the encoded descriptor (core/wire/attachment.h): blob id,
// key, digest and sizes, everything FetchAttachment needs later. The reference holds the file's key; the
// transcript is sealed under the master key like every other row. Internal to cw_runtime.
// Thread rules: free functions, safe from any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/secret.h"
#include "core/base/status.h"
#include "core/wire/attachment.h"

namespace cw::runtime {

inline constexpr std::string_view kAttachmentReferencePrefix = "cw-attachment:1:";

struct FileRow {
  SecretBytes body;                      // the file name
  std::vector<SecretBytes> attachments;  // one reference (it carries the file's key)
  wire::AttachmentDescriptor descriptor;
};

// From a kFile message's payload (untrusted: kMalformed / kUnsupportedVersion as DecodeAttachment).
Result<FileRow> FileRowFromPayload(const SecretBytes& payload);
// From our own descriptor, for the outgoing row.
Result<FileRow> FileRowFromDescriptor(wire::AttachmentDescriptor descriptor);

// The descriptor a transcript row's attachment reference names; kNotFound for a row without one.
Result<wire::AttachmentDescriptor> DescriptorFromReferences(const std::vector<SecretBytes>& attachments);

}  // namespace cw::runtime
